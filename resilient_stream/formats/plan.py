"""What a wire format's planner answers with, and what it is asked from (sans-I/O).

A :class:`Planner` (one per logical stream: ``formats/ollama/planner.py``,
``formats/openai/planner.py``) turns the caller's request, and the
:class:`Progress` made so far, into the next :class:`AttemptPlan`, or says
that no request is needed (:class:`Finished`) or possible (:class:`NotResumable`).
The plan names its framing and chunk type in the terms of the table in
``formats/__init__.py``, which is how the stream finds the framer, the
decoder and the chunk adapter that read the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """One HTTP request to make: where, what, and how to read its chunks."""

    path: str
    body: bytes
    #: The type the response's chunks decode to.
    chunk_type: type[Any]
    #: Maps each decoded chunk to the caller's chunk type (None: already is).
    convert: Callable[[Any], Any] | None = None
    #: How the body is framed: a key of ``formats.FRAMINGS`` ("ndjson": Ollama,
    #: "sse": OpenAI-compatible).
    framing: str = "ndjson"
    #: The most tokens the caller asked for over the whole stream (None: no limit, or a
    #: planner that keeps its own ledger): with it, a resume whose delivered tokens are
    #: only bounded and leave nothing certain to ask for starts over (see ``resume/``).
    token_limit: int | None = None
    #: How the tokens of a chunk the server did not count are bounded (``resume/
    #: accounting.py``): "bytes" (any byte-level tokenizer) or "utf8" (servers that put
    #: several tokens in one chunk only to complete a UTF-8 character).
    token_bound: str = "bytes"


@dataclass(frozen=True, slots=True)
class Finished:
    """No request needed: the budget of tokens is already used up."""

    done_reason: str = "length"


@dataclass(frozen=True, slots=True)
class NotResumable:
    """Output started and the request cannot be continued faithfully."""

    reason: str


@dataclass(slots=True)
class Progress:
    """What the caller has been given so far (after seam cuts)."""

    text: str = ""
    thinking: str = ""
    #: Tokens that ``text`` and ``thinking`` took: the server's count where it reported
    #: one, else an upper bound (``exact`` False), never less than the truth.
    tokens: int = 0
    exact: bool = True

    @property
    def started(self) -> bool:
        """Anything received yet? (If not, the next attempt is a plain retry.)"""
        return self.tokens > 0 or bool(self.text or self.thinking)


class Planner(Protocol):
    """What a stream needs from a wire format's planner (one per logical stream)."""

    #: The most tokens the caller asked for (``num_predict``, ``max_tokens``); None: no limit.
    token_limit: int | None

    def initial(self) -> AttemptPlan: ...

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        """The request that continues after ``progress`` (or restarts if nothing came)."""
        ...
