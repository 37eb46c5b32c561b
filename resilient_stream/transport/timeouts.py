"""Which bound applies to what, for one request: httpx's timeouts read the HTTP/2 way (sans-I/O).

- ``connect``: TCP + TLS + the HTTP/2 handshake (``None``: the config's
  ``connect_timeout``);
- ``pool``: the wait for a stream slot when every connection is full (``None``:
  the config's ``pool_timeout``);
- ``read``: *this stream's* wait for its headers and first DATA frame, then each
  gap between two of its DATA frames (``None``: no bound, as in httpx);
- ``write``: the wait for send window while the request body goes out
  (``None``: no bound, as in httpx).

``read=None`` is no read timeout, as in httpx: a caller that detects stalls
itself (``StreamClient`` does, per stream, with its watchdog) passes ``None``
and is the only owner of that decision. A caller that wants this transport's
own two-phase bound asks for it explicitly with the request extension
:data:`STREAM_TIMEOUTS`, which then replaces ``read``:

- ``"config"``: ``first_token_timeout`` until the first DATA frame (a model may
  be loading), then ``idle_timeout`` between chunks;
- ``{"first": seconds, "idle": seconds}``: those bounds (``None``: no bound; a key
  left out: the config's value for it), and optionally ``"headers"``: seconds from
  the request until its response headers, connecting and waiting for a stream slot
  included (left out or ``None``: no bound of its own). Past it the request fails with
  :class:`~resilient_stream.errors.HeadersTimeoutError`. On HTTP/2 it is a deadline
  on the connection's timing wheel (no asyncio timer per request, as
  ``asyncio.timeout`` around the call would be); over HTTP/1.1 it bounds the call
  that returns the headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..config import StreamConfig
from ..errors import ConfigError, HeadersTimeoutError

#: The request extension that asks for the transport's per-stream bounds (see above).
STREAM_TIMEOUTS = "stream_timeouts"

_KEYS = frozenset({"first", "headers", "idle"})


class RequestTimeouts:
    """The bounds of one request, in seconds (``None``: no bound)."""

    __slots__ = ("connect", "first", "headers", "idle", "pool", "write")

    def __init__(
        self,
        *,
        connect: float,
        pool: float,
        first: float | None,
        idle: float | None,
        write: float | None,
        headers: float | None = None,
    ) -> None:
        self.connect = connect
        self.pool = pool
        self.first = first  # headers and the first DATA frame
        self.idle = idle  # each gap between two DATA frames after that
        self.write = write
        self.headers = headers  # from the request to its response headers, all included

    @property
    def read(self) -> float | None:
        """One read bound covering both phases (HTTP/1.1 has only one): the larger."""
        if self.first is None or self.idle is None:
            return None
        return max(self.first, self.idle)


def request_timeouts(extensions: Mapping[str, Any], config: StreamConfig) -> RequestTimeouts:
    """The bounds of a request with these httpx ``extensions`` on a transport with ``config``."""
    timeouts: Mapping[str, float | None] = extensions.get("timeout") or {}
    connect = timeouts.get("connect")
    pool = timeouts.get("pool")
    read = timeouts.get("read")
    first, idle = read, read
    headers = None
    asked = extensions.get(STREAM_TIMEOUTS)
    if asked == "config":
        first, idle = config.first_token_timeout, config.idle_timeout
    elif type(asked) is dict or isinstance(asked, Mapping):
        if not _KEYS.issuperset(asked):
            unknown = sorted(set(asked) - _KEYS)
            raise ConfigError(
                f"unknown key {unknown[0]!r} in the {STREAM_TIMEOUTS!r} request extension "
                "(known: 'first', 'headers', 'idle')"
            )
        first = asked.get("first", config.first_token_timeout)
        idle = asked.get("idle", config.idle_timeout)
        headers = asked.get("headers")
    elif asked is not None:
        raise ConfigError(
            f"the {STREAM_TIMEOUTS!r} request extension is 'config' or a mapping with "
            f"'first' and 'idle', got {asked!r}"
        )
    return RequestTimeouts(
        connect=connect if connect is not None else config.connect_timeout,
        pool=pool if pool is not None else config.pool_timeout,
        first=first,
        idle=idle,
        write=timeouts.get("write"),
        headers=headers,
    )


class HeadersDeadline(NamedTuple):
    """A request's ``headers`` bound as a deadline in loop time (set when it starts)."""

    until: float
    seconds: float

    def error(self, endpoint: str, waiting: str) -> HeadersTimeoutError:
        """The bound passed while the request was ``waiting`` (for what)."""
        return headers_timeout_error(self.seconds, endpoint, waiting)


def headers_timeout_error(seconds: float, endpoint: str, waiting: str) -> HeadersTimeoutError:
    """No headers within a request's ``headers`` bound of ``seconds``, ``waiting`` for what."""
    return HeadersTimeoutError(
        f"no response headers within {seconds:.3g}s (the request's headers bound; {waiting})",
        waited=seconds,
        endpoint=endpoint,
    )
