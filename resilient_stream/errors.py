"""The typed error tree.

Every failure a user can see is a :class:`StreamError`. Each one says what
failed (``endpoint``), how many attempts were made (``attempts``), whether the
cause is worth retrying (``retryable``), and keeps the cause chain
(``__cause__``). Errors raised by the transport also subclass the matching
``httpx`` exception, so plain ``httpx`` users can keep catching
``httpx.TransportError`` and friends.

Retryable errors are retried (before output started) or resumed (after);
permanent ones fail at once with a message a user can act on.
"""

from __future__ import annotations

import re
from typing import Any

import httpx


class StreamError(Exception):
    """Base of every error raised by resilient-stream."""

    #: Whether a fresh attempt (retry or resume) may succeed.
    retryable: bool = False

    def __init__(self, message: str, *, endpoint: str | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.attempts = attempts

    def reveal_content(self) -> None:
        """Add the withheld content (model output, an error body) to the message.

        Messages say where and what shape by default, never content: servers
        echo prompts in error bodies, and malformed lines are model output.
        Called when the user opted in with ``log_content``."""
        preview = self._content_preview()
        if preview and not getattr(self, "_revealed", False):
            self._revealed = True
            self.message += f"; content: {preview}"
            self.args = (self.message,)

    def _content_preview(self) -> str:
        return ""

    def __str__(self) -> str:
        parts = [self.message]
        if self.endpoint:
            parts.append(f"endpoint={self.endpoint}")
        if self.attempts:
            parts.append(f"attempts={self.attempts}")
        return " | ".join(parts)


# --- configuration ---------------------------------------------------------


class ConfigError(StreamError, ValueError):
    """A configuration key is unknown or has the wrong type or value."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidRequestError(StreamError, ValueError):
    """The request itself is wrong (unknown field, wrong type): fix the call."""


# --- what the server sent ----------------------------------------------------


class ProtocolError(StreamError):
    """The body is not the NDJSON stream we expect (framing or decoding)."""

    retryable = True


class LineTooLongError(ProtocolError):
    """A line grew past ``max_line_bytes`` without a newline.

    Raised instead of buffering without bound. Not retryable by default: a
    server that sends a 1 MiB line once will most likely do it again.
    """

    retryable = False

    def __init__(self, limit: int, buffered: int) -> None:
        super().__init__(
            f"NDJSON line exceeds max_line_bytes={limit} ({buffered} bytes buffered without a "
            "newline); raise StreamConfig.max_line_bytes if such lines are expected"
        )
        self.limit = limit
        self.buffered = buffered


class MalformedChunkError(ProtocolError):
    """A complete line is not a valid chunk (bad JSON, wrong field types, HTML...)."""

    def __init__(self, reason: str, line: bytes) -> None:
        super().__init__(f"malformed NDJSON chunk: {reason}; a line of {len(line)} bytes")
        self.reason = reason
        #: The raw line (model output: kept for the caller, never in the message).
        self.line = line
        #: The line is an HTML page (a proxy's error page, a web server at the wrong URL).
        self.html = reason.startswith("an HTML page")
        #: Chunks decoded from the same read before the bad line (not lost).
        self.chunks_before: list[Any] = []

    def _content_preview(self) -> str:
        more = "..." if len(self.line) > 200 else ""
        return repr(self.line[:200].decode("utf-8", "replace")) + more


class TruncatedStreamError(ProtocolError):
    """The body ended without a ``done: true`` chunk (or mid-line).

    Truncation is an interruption, never a success: it is resumed.
    """

    def __init__(self, message: str, *, partial_line: bytes = b"") -> None:
        super().__init__(message)
        self.partial_line = partial_line
        #: Chunks decoded from the same read before the end was seen (not lost).
        self.chunks_before: list[Any] = []


class OutputLimitError(ProtocolError):
    """The server sent far more than was asked: more tokens than ``num_predict`` /
    ``max_tokens`` allow by a clear margin, or more than ``max_output_bytes``.

    The stream is stopped and the upstream request cancelled. Not retryable: a
    server that ignores the limit once will do it again. The output delivered
    before it stays delivered.
    """

    retryable = False


class ResumeDivergedError(StreamError):
    """A resumed attempt did not regenerate the held-back overlap (and
    ``on_divergence="raise"``): its continuation would not be the same answer.

    ``delivered`` is the text the caller already has (nothing after it was
    delivered), ``continuation`` what the server sent instead of the overlap.
    """

    def __init__(self, message: str, *, delivered: str, continuation: str) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.continuation = continuation


class ServerReportedError(StreamError):
    """The server sent an ``{"error": "..."}`` line.

    ``retryable`` is decided from the message: one that names a bad request
    ("model 'x' not found", "invalid ...", "... is required") is permanent; a
    runner crash or an unexpected EOF is not.
    """

    def __init__(self, error: str, *, endpoint: str | None = None) -> None:
        permanent = _PERMANENT_ERROR_TEXT.search(error) is not None
        hint = " (a bad request: fix it rather than retry)" if permanent else ""
        super().__init__(f"server reported an error: {error}{hint}", endpoint=endpoint)
        self.error = error
        self.retryable = not permanent
        #: Chunks decoded from the same read before the error line (not lost).
        self.chunks_before: list[Any] = []


_PERMANENT_ERROR_TEXT = re.compile(
    r"not found|invalid|bad request|unknown (model|field|option)|is required|"
    r"does not support|not supported|unsupported|unauthori[sz]ed|forbidden|"
    r"exceeds (the )?context|too long",
    re.IGNORECASE,
)


class HTTPStatusError(StreamError):
    """The server answered with a non-2xx status."""

    RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

    def __init__(
        self,
        status_code: int,
        body: str,
        *,
        retry_after: float | None = None,
        endpoint: str | None = None,
        content_type: str | None = None,
        note: str = "",
    ) -> None:
        hint = _STATUS_HINTS.get(status_code, "")
        message = f"HTTP {status_code}"
        if hint:
            message += f" ({hint})"
        media = (content_type or "").split(";")[0].strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            message += f": not an Ollama/OpenAI API: the server answered {media} "
            message += f"({len(body)} characters; a web page or a gateway's error page)"
        elif body.strip():
            # Servers echo the request (the prompt) in error bodies: shape only, by default.
            message += f"; the server's error text ({len(body)} characters) is in .body"
        if note:
            message += f" ({note})"
        super().__init__(message, endpoint=endpoint)
        self.status_code = status_code
        #: The server's error message (or the body as text), up to 64 KiB.
        self.body = body
        self.content_type = content_type
        self.retry_after = retry_after
        self.retryable = status_code in self.RETRYABLE_STATUSES

    def _content_preview(self) -> str:
        preview = self.body[:300].strip()
        return repr(preview) + ("..." if len(self.body) > 300 else "") if preview else ""


_STATUS_HINTS = {
    400: "bad request: check the request fields",
    401: "unauthorized: check the Authorization header / API key",
    403: "forbidden: the credentials lack access to this model or endpoint",
    404: "not found: is the model pulled (`ollama pull MODEL`) and the URL right?",
    429: "rate limited: retried after Retry-After",
    503: "server busy (queue full): retried after Retry-After",
}


# --- transport ---------------------------------------------------------------


class TransportError(StreamError, httpx.TransportError):
    """The network failed under a request. Retryable unless stated."""

    retryable = True


class ConnectError(TransportError, httpx.ConnectError):
    """Could not open a connection (refused, unreachable, TLS or h2 handshake failed)."""


class ConnectTimeout(TransportError, httpx.ConnectTimeout):
    """Opening a connection took longer than ``connect_timeout``."""


class PoolTimeout(TransportError, httpx.PoolTimeout):
    """No stream slot became free within ``pool_timeout`` (all connections full)."""


class ConnectionLostError(TransportError, httpx.RemoteProtocolError):
    """The connection carrying the stream closed or failed (reset, EOF, ping timeout)."""


class FloodError(ConnectionLostError):
    """The server flooded the connection with frames it sent unasked (PING, SETTINGS,
    empty DATA, ...) past the client's budget; the client closed it with
    GOAWAY(ENHANCE_YOUR_CALM). Retryable: a new connection may behave."""


class StreamResetError(TransportError, httpx.RemoteProtocolError):
    """The server reset this stream (HTTP/2 RST_STREAM). Other streams are unaffected."""

    def __init__(self, message: str, *, error_code: int = 0, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.error_code = error_code


class RefusedStreamError(StreamResetError):
    """RST_STREAM(REFUSED_STREAM): the server never processed it; safe to retry at once."""


class GoAwayError(TransportError, httpx.RemoteProtocolError):
    """The server sent GOAWAY. ``processed`` is False for streams above last_stream_id."""

    def __init__(
        self,
        message: str,
        *,
        last_stream_id: int,
        error_code: int = 0,
        processed: bool = True,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint)
        self.last_stream_id = last_stream_id
        self.error_code = error_code
        self.processed = processed


class StallError(TransportError, httpx.ReadTimeout):
    """No data arrived on this stream within its idle (or first-token) timeout."""

    def __init__(self, message: str, *, waited: float, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.waited = waited


class HeadersTimeoutError(StallError):
    """No response headers within the request's ``headers`` bound (the transport's
    ``stream_timeouts`` request extension): the server took the request and never
    answered it, or the wait for a connection or a stream slot outlasted the bound."""


# --- giving up -----------------------------------------------------------------


class DeadlineExceeded(StreamError):
    """The stream's total deadline passed. Carries the last cause as ``__cause__``."""


class RetryBudgetExhausted(StreamError):
    """The client-wide retry budget is empty: most recent attempts failed.

    Failing fast here protects a struggling backend from a retry storm.
    """


class AttemptsExhausted(StreamError):
    """``max_attempts`` attempts failed. The last cause is ``__cause__``."""


class NoHealthyReplica(StreamError):
    """Every replica is ejected after repeated failures."""


class IncompleteStreamError(StreamError, httpx.RemoteProtocolError):
    """The SDK transports gave up on a body the SDK was already reading.

    Raised from the body read (an ``httpx.RemoteProtocolError``, which is what an
    SDK reading the server directly sees when its stream breaks), so code written
    for ``except httpx.HTTPError`` still catches it. The give-up itself
    (:class:`AttemptsExhausted`, :class:`RetryBudgetExhausted`, ...) is ``error``
    and ``__cause__``; ``delivered`` counts the body bytes the SDK had received.
    """

    def __init__(self, error: StreamError, *, delivered: int) -> None:
        super().__init__(
            f"the stream ended incomplete after {delivered} body bytes reached the SDK: "
            f"resilient_stream gave up ({type(error).__name__}: {error})",
            endpoint=error.endpoint,
            attempts=error.attempts,
        )
        self.error = error
        self.delivered = delivered
