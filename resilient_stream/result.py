"""What a finished stream reports: the whole answer and how it got there."""

from __future__ import annotations

import msgspec


class Seam(msgspec.Struct, frozen=True, kw_only=True):
    """Where a resume joined the stream."""

    offset: int
    """Characters of ``text`` delivered before the seam."""
    thinking_offset: int
    """Characters of ``thinking`` delivered before the seam."""
    tokens: int
    """Tokens delivered before the seam (the server's count, or an upper bound)."""
    attempt: int
    """The attempt number that continued the stream (2 = the first resume)."""
    reason: str
    """Why the previous attempt broke (the error's type and message)."""
    cut: int = 0
    """Characters of the continuation dropped because the caller already had them (the
    verified overlap, or the whole answer when the server restarted it)."""
    endpoint: str = ""
    """The replica the resumed attempt went to."""
    verified: bool = False
    """The resumed attempt regenerated the held-back overlap byte for byte (or the
    whole answer, for a server that restarts it) before anything new was delivered."""
    overlap: int = 0
    """Characters held back and checked at this seam."""
    superseded: bool = False
    """The attempt after this seam broke before the seam was decided: nothing was
    delivered after it, and the next seam (at the same point) decides instead."""


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One HTTP request made for the stream."""

    number: int
    endpoint: str
    path: str
    tokens: int
    outcome: str
    """"done", or the error's type and message."""


class StreamResult(msgspec.Struct, kw_only=True):
    """The full result, available as ``stream.result`` after the end."""

    text: str = ""
    thinking: str = ""
    done: bool = False
    done_reason: str | None = None
    eval_count: int = 0
    """Tokens generated for what the caller received, over all attempts (a held-back
    overlap counted once): the servers' counts where they reported them, else an upper
    bound (``tokens_exact`` False; see docs/resume.md)."""
    tokens_exact: bool = True
    """``eval_count`` is the servers' count, not an upper bound of it."""
    prompt_eval_count: int | None = None
    attempts: int = 0
    """HTTP requests that counted as attempts (transparent retries excluded)."""
    retries: int = 0
    """Attempts that restarted from nothing (no output yet)."""
    resumes: int = 0
    """Attempts that continued partial output."""
    seams: list[Seam] = msgspec.field(default_factory=list)
    history: list[AttemptRecord] = msgspec.field(default_factory=list)
    verified: bool = True
    """Every seam verified (True when there was none): the stream is the same answer
    an unbroken run gives, as far as the server is deterministic."""
    time_to_first_token: float | None = None
    """Seconds from the first request to the first chunk with text."""
    total_time: float | None = None
    """Seconds from the first request to the end."""
