"""Turning what went wrong into the error a caller sees (no I/O but reading an error body).

The attempt policy (policy.py) decides *whether* to retry; this module says
*what* a failure is: the error a non-2xx answer becomes, whether a failure blames the
replica, and the final error when a stream gives up (kept typed, with the
last cause in the message and in ``__cause__``).
"""

from __future__ import annotations

import contextlib

import httpx
import msgspec

from .errors import (
    AttemptsExhausted,
    DeadlineExceeded,
    HTTPStatusError,
    MalformedChunkError,
    OutputLimitError,
    RetryBudgetExhausted,
    StallError,
    StreamError,
    TransportError,
)
from .retry import parse_retry_after

MAX_ERROR_BODY = 65_536


def describe(exc: BaseException) -> str:
    """``Type: message`` without the endpoint/attempt suffix (said once, by the outer error)."""
    text = exc.message if isinstance(exc, StreamError) else str(exc)
    return f"{type(exc).__name__}: {text}"


def blames_replica(exc: BaseException) -> bool:
    """Failures that say something about the replica (not about the request)."""
    if isinstance(exc, HTTPStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 429)
    return isinstance(exc, httpx.TransportError | TransportError | OSError | StallError)


async def status_error(response: httpx.Response, endpoint: str | None) -> HTTPStatusError:
    """Read (a bounded part of) a non-2xx answer and close it: the error it means.

    Ollama's ``{"error": "..."}`` and OpenAI's ``{"error": {"message": ...}}`` give
    the message; anything else (an HTML page from a gateway) is kept as text. The
    error's message says only its shape (see :class:`HTTPStatusError`).
    """
    body = b""
    try:
        async for piece in response.aiter_bytes():  # decoded, should a proxy compress
            body += piece
            if len(body) > MAX_ERROR_BODY:
                body = body[:MAX_ERROR_BODY]
                break
    except httpx.DecodingError:
        pass  # keep what decoded: it only explains the status
    finally:
        await response.aclose()
    text = body.decode("utf-8", "replace")
    with contextlib.suppress(msgspec.DecodeError):
        decoded = msgspec.json.decode(body)
        error = decoded.get("error") if isinstance(decoded, dict) else None
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str):
            text = error
    return HTTPStatusError(
        response.status_code,
        text,
        retry_after=parse_retry_after(response.headers),
        endpoint=endpoint,
        content_type=response.headers.get("content-type"),
    )


def give_up_error(
    exc: BaseException,
    *,
    attempts: int,
    max_attempts: int,
    endpoint: str | None,
    note: str = "",
) -> BaseException:
    """The error a stream ends with after ``exc``: permanent errors as they are,
    ``AttemptsExhausted`` when attempts ran out, anything untyped as TransportError."""
    if isinstance(exc, BaseException) and not isinstance(exc, Exception):
        return exc  # CancelledError, KeyboardInterrupt...: never wrapped
    if isinstance(exc, StreamError) and not exc.retryable and not note:
        error: StreamError = exc
    elif attempts >= max_attempts:
        error = AttemptsExhausted(
            f"gave up after {attempts} attempts; last cause: {describe(exc)}", endpoint=endpoint
        )
    elif isinstance(exc, StreamError):
        error = exc
        if note:
            exc.message += f" ({note})"
    else:
        suffix = f" ({note})" if note else ""
        error = TransportError(f"{describe(exc)}{suffix}", endpoint=endpoint)
    error.attempts = attempts
    return error


def budget_error(exc: BaseException, *, attempts: int, endpoint: str | None) -> StreamError:
    return RetryBudgetExhausted(
        "retry budget exhausted on every replica: most recent attempts failed, so this stream "
        "fails fast instead of adding load to a struggling backend; last cause: "
        f"{describe(exc)}",
        endpoint=endpoint,
        attempts=attempts,
    )


def deadline_error(
    exc: BaseException | None, *, total_timeout: float, attempts: int, endpoint: str | None
) -> StreamError:
    cause = f"; last cause: {describe(exc)}" if exc is not None else ""
    return DeadlineExceeded(
        f"total_timeout ({total_timeout:.1f}s) passed{cause}",
        endpoint=endpoint,
        attempts=attempts,
    )


def stall_error(
    waited: float, limit: float, *, first_chunk: bool, endpoint: str | None
) -> StallError:
    """No complete record within the stream's limit: a stall (resumed)."""
    what = (
        "first_token_timeout"
        if first_chunk
        else f"idle timeout {limit:.2f}s, adapted to the stream's pace"
    )
    return StallError(
        f"no data on this stream for {waited:.2f}s ({what})", waited=waited, endpoint=endpoint
    )


def headers_timeout(waited: float, first_token_timeout: float, endpoint: str) -> StallError:
    return StallError(
        f"no response headers within first_token_timeout ({first_token_timeout:.1f}s)",
        waited=waited,
        endpoint=endpoint,
    )


def output_limit_error(why: str, endpoint: str | None) -> OutputLimitError:
    return OutputLimitError(
        f"stopped a stream that sent far more than asked ({why}); the output so far "
        "was delivered and the upstream request cancelled",
        endpoint=endpoint,
    )


def not_an_api(exc: MalformedChunkError, response: httpx.Response | None) -> MalformedChunkError:
    """A web page where the stream should be: the URL is wrong, retrying will not help."""
    media = response.headers.get("content-type", "") if response is not None else ""
    exc.message = (
        f"not an Ollama/OpenAI API: the server answered an HTML page "
        f"({media.split(';')[0] or 'no content-type'}, {len(exc.line)} bytes) instead "
        "of a stream; check the URL"
    )
    exc.args = (exc.message,)
    exc.retryable = False
    return exc
