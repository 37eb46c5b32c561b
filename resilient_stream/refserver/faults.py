"""Deterministic server-side faults, for resume tests.

A :data:`FaultPlan` is called once per request with a :class:`RequestInfo` and
returns the :class:`Fault` to inject into that response, or None. Faults that
act mid-stream fire after ``after_tokens`` token lines were sent; if the
stream ends with fewer tokens, the fault never fires (with exactly
``after_tokens`` tokens it fires instead of the final ``done`` line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import msgspec

FaultKind = Literal[
    "drop_connection",
    "reset_stream",
    "stall",
    "truncate",
    "truncate_line",
    "error_line",
    "status",
    "goaway",
    "never_answer",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
#: Kinds that act before any response header is sent.
BEFORE_HEADERS: frozenset[str] = frozenset({"status", "never_answer"})

#: HTTP/2 error codes used as defaults.
NO_ERROR = 0
INTERNAL_ERROR = 2


class Fault(msgspec.Struct, frozen=True):
    """One injected fault.

    - ``drop_connection``: close the TCP connection after ``after_tokens`` lines.
    - ``reset_stream``: RST_STREAM(``error_code``, default INTERNAL_ERROR); h1 closes.
    - ``stall``: send nothing more; after ``seconds`` (if given) h1 closes the
      connection and h2 resets the stream (other streams keep going).
    - ``truncate``: end the body cleanly without a ``done: true`` line.
    - ``truncate_line``: send the first half (bytes) of the next line, then end the body.
    - ``error_line``: send ``{"error": message}`` and end the body.
    - ``status``: answer ``status`` before any output, with ``retry_after`` and ``body``.
    - ``goaway``: send GOAWAY(``last_stream_id`` or the highest stream id,
      ``error_code`` default NO_ERROR) and close; h1 closes.
    - ``never_answer``: never send headers, until the client goes away.
    """

    kind: FaultKind
    after_tokens: int = 0
    seconds: float | None = None
    status: int = 503
    retry_after: float | str | None = None
    body: str | bytes | None = None
    message: str = "reference server: injected error"
    last_stream_id: int | None = None
    error_code: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.after_tokens < 0:
            raise ValueError("after_tokens must be >= 0")

    def status_body(self) -> bytes:
        """The body of a ``status`` fault (default: an Ollama-style error object)."""
        if self.body is None:
            return msgspec.json.encode({"error": f"reference server: injected {self.status}"})
        return self.body.encode() if isinstance(self.body, str) else self.body


class RequestInfo(msgspec.Struct, frozen=True):
    """What a fault plan sees of a request."""

    #: 0-based count of requests this server received (all endpoints).
    index: int
    path: str
    #: The decoded JSON body ({} when there is none).
    body: dict[str, Any]
    protocol: Literal["h1", "h2"]


FaultPlan = Callable[[RequestInfo], Fault | None]


class FaultSchedule:
    """A FaultPlan from a table: request index -> fault (optionally only for some paths).

    ``FaultSchedule({0: Fault("drop_connection", after_tokens=5)})`` breaks the
    first request only, so its resume (request 1) succeeds.
    """

    def __init__(
        self, by_index: Mapping[int, Fault], *, paths: frozenset[str] | None = None
    ) -> None:
        self.by_index = dict(by_index)
        self.paths = paths

    def __call__(self, info: RequestInfo) -> Fault | None:
        if self.paths is not None and info.path not in self.paths:
            return None
        return self.by_index.get(info.index)
