"""Retry decisions (sans-I/O): what is retryable, how long to wait, and whether
the client as a whole may still retry.

The waiting itself is done by tenacity's ``AsyncRetrying`` in ``stream.py``;
the functions here are what it is configured with, so they are testable
without a clock or a socket.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping

from .errors import GoAwayError, HTTPStatusError, RefusedStreamError, StreamError


def is_retryable(exc: BaseException) -> bool:
    """Retry or resume after ``exc``? CancelledError never is: cancelling must stop."""
    if isinstance(exc, asyncio.CancelledError):
        return False
    if isinstance(exc, StreamError):
        return exc.retryable
    return isinstance(exc, OSError | TimeoutError)


#: gRPC's transparent retry: a request the server never processed (REFUSED_STREAM, a
#: stream above a GOAWAY's last_stream_id) is resent at once, once, at no cost. When it
#: is refused again it is an ordinary failure: counted, backed off, charged to the
#: retry budget (a server that refuses everything must not get a request storm).
FREE_TRANSPARENT_RETRIES = 1
_RESENT = "_resilient_transparent_retries"


def never_processed(exc: BaseException) -> bool:
    """The server says it never processed the request (safe to send again)."""
    if isinstance(exc, RefusedStreamError):
        return True
    return isinstance(exc, GoAwayError) and not exc.processed


def transparent_retries(exc: BaseException) -> int:
    """How often the request behind ``exc`` was already resent after such failures."""
    value = exc.__dict__.get(_RESENT, 0)
    return value if isinstance(value, int) else 0


def note_transparent_retries(exc: BaseException, n: int) -> None:
    """Record on ``exc`` that its request was already resent ``n`` times (the transport's
    own transparent retries), so no layer above gives it another free retry."""
    exc.__dict__[_RESENT] = n


def is_transparent(exc: BaseException) -> bool:
    """A failure the server never processed whose free retry is not spent: retrying it
    costs no attempt and no wait. Once spent, the failure is an ordinary one."""
    return never_processed(exc) and transparent_retries(exc) < FREE_TRANSPARENT_RETRIES


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(max, initial * 2**(n-1)))."""
    if failures <= 0:
        return 0.0
    ceiling = min(maximum, initial * (2 ** min(failures - 1, 30)))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def retry_after_of(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, HTTPStatusError) else None


class RetryBudget:
    """Client-wide retry throttling, as gRPC does it.

    Every failed attempt costs one token, every success refunds ``ratio``.
    Retries are allowed only while more than half of ``max_tokens`` is left,
    so when most recent attempts fail the client stops retrying and fails fast
    instead of multiplying the load on a struggling backend.
    """

    __slots__ = ("max_tokens", "ratio", "tokens")

    def __init__(self, max_tokens: float, ratio: float) -> None:
        self.max_tokens = max_tokens
        self.ratio = ratio
        self.tokens = max_tokens

    def on_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)

    def on_success(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def allows_retry(self) -> bool:
        return self.max_tokens <= 0 or self.tokens > self.max_tokens / 2
