"""``ResilientStream``: the async iterator a caller holds.

A stream is composed of small parts, each with one job: the narrow
:class:`~resilient_stream.context.StreamContext` (HTTP client, replicas, log),
an :class:`~resilient_stream.policy.AttemptPolicy` (may another attempt
follow, and when), a planner (how the next request looks), an assembler (one
seamless stream out of several attempts), and per attempt a framer and a
decoder. This module does the I/O around them: it opens attempts (the
request/headers phase retried by tenacity's ``AsyncRetrying``; nothing is
yielded inside a tenacity attempt and ``CancelledError`` is never retried),
reads bodies, watches for stalls (one lazily re-armed timer per stream), and
carries out the policy's verdicts.

Leaving ``async for`` early, ``aclose()``, ``async with`` exit or cancelling
the task closes the HTTP response, which on our transport sends RST_STREAM
(CANCEL) so the server stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Generic, TypeVar

import httpx

from . import failures
from .attempts import Attempts, Opened
from .buffering import IdleTimeoutPolicy
from .codec.content_encoding import Inflater
from .context import StreamContext
from .errors import (
    MalformedChunkError,
    ProtocolError,
    ServerReportedError,
    StreamError,
    TruncatedStreamError,
)
from .formats.plan import Planner
from .formats.reader import RecordReader
from .result import StreamResult
from .resume.assembler import StreamAssembler
from .transport.response import H2ResponseStream, ReadDeadline
from .watchdog import BodyReader, WatchedBody, body_reader, direct_body, loop_clock

ChunkT = TypeVar("ChunkT")

_NO_LIMIT = 1 << 62
#: How a body read ends other than with bytes (``ResilientStream._read_ended``).
_READ_ENDS = (StopAsyncIteration, ReadDeadline, httpx.TransportError, StreamError, OSError)


class ResilientStream(Generic[ChunkT]):
    """Async iterator of typed chunks that survives interruptions.

    After the end, ``result`` holds the full text and how it was obtained.
    """

    # One per open stream, so no __dict__ (and a weak reference for StreamContext.streams).
    __slots__ = (
        "__weakref__",
        "_asm",
        "_attempt_first_chunk",
        "_attempts",
        "_body_left",
        "_cfg",
        "_closed",
        "_ctx",
        "_ended_at",
        "_error",
        "_first_token_at",
        "_h2",
        "_idle",
        "_inflate",
        "_last_read",
        "_limit",
        "_out",
        "_planner",
        "_policy",
        "_read",
        "_reader",
        "_response",
        "_started_at",
        "_token_cap",
        "_waiting_since",
        "_watched",
        "id",
    )

    def __init__(
        self, ctx: StreamContext, planner: Planner, caller_type: type[ChunkT], sid: int
    ) -> None:
        cfg = ctx.config
        self.id = sid
        self._ctx = ctx
        self._cfg = cfg
        self._planner = planner
        self._asm: StreamAssembler[ChunkT] = StreamAssembler(
            caller_type,
            min_overlap=cfg.seam_overlap,
            max_overlap=cfg.max_seam_overlap,
            raise_restarts=cfg.on_divergence == "raise",
        )
        self._attempts = Attempts(ctx, planner, self._asm, sid)
        self._policy = self._attempts.policy
        # Chunks due to the caller: mostly one at a time; a list is 60 bytes where an
        # empty deque is 600 (this is per open stream).
        self._out: list[ChunkT] = []
        # the current attempt
        self._response: httpx.Response | None = None
        self._read: BodyReader | None = None  # the body's next piece, within a deadline
        # our transport's stream, read here directly (one coroutine less per read) when
        # its loop's clock is time.monotonic (the deadlines here are in that clock)
        self._h2: H2ResponseStream | None = None
        self._watched: WatchedBody | None = None  # its watchdog (bodies not of our transport)
        self._inflate: Inflater | None = None  # the body's Content-Encoding, undone
        self._reader: RecordReader | None = None  # the body's records into chunks
        self._attempt_first_chunk = True
        # liveness: progress is complete records, not bytes
        self._idle = IdleTimeoutPolicy.for_config(cfg)
        self._last_read = 0.0
        # When the wait for the next record began: when the last one was delivered (None
        # after an attempt's headers: the first read starts it)
        self._waiting_since: float | None = None
        self._limit = cfg.first_token_timeout  # the wait for the next record may last
        # limits against servers that do not stop
        self._body_left = cfg.max_output_bytes or _NO_LIMIT  # bytes the bodies may still bring
        # An attempt that sends more than twice what the whole stream may have (counted
        # by a lower bound: a chunk holds at least one token) ignores the limit.
        limit = planner.token_limit
        self._token_cap = 2 * limit + 16 if limit is not None else _NO_LIMIT
        # the stream's life
        self._started_at: float | None = None
        self._first_token_at: float | None = None
        self._ended_at: float | None = None
        self._closed = False
        self._error: BaseException | None = None

    # --- public API --------------------------------------------------------------

    def __aiter__(self) -> ResilientStream[ChunkT]:
        return self

    async def __anext__(self) -> ChunkT:
        out = self._out
        while not out:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            try:
                h2 = self._h2
                if h2 is None:
                    await self._advance()
                    continue
                # Our transport's body, read here rather than in _advance: one coroutine
                # less a record (the steady state of every stream). The wait for the
                # next record began when the last one was delivered; what came since
                # is taken before any wait, so a slow caller is never a stall.
                since = self._waiting_since
                if since is None:
                    since = self._waiting_since = time.monotonic()
                limit = self._limit
                until = since + limit
                deadline = self._policy.deadline
                if until > deadline:
                    until = deadline
                s = h2.stream
                failure: BaseException | None
                try:
                    while not s.chunks:
                        if s.error is not None:
                            raise s.error
                        if s.ended:
                            raise StopAsyncIteration
                        await h2.wait(until)
                except _READ_ENDS as exc:
                    failure = self._read_ended(exc, since, until, limit)
                else:
                    failure = self._consume(h2.take())
                    asm = self._asm
                    if failure is None and asm.final is None and not asm.diverged:
                        continue
                await self._settle(failure)
            except asyncio.CancelledError:
                await self._abort()
                raise
            except BaseException as exc:
                await self._abort()
                self._error = self._attempts.error  # a give-up is raised again and again
                if not out:
                    raise
                self._error = exc  # deliver what came before the error first
        return out.pop(0)

    async def __aenter__(self) -> ResilientStream[ChunkT]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream: cancel the upstream request and release everything."""
        await self._abort()

    async def collect(self) -> StreamResult:
        """Consume the whole stream and return its result."""
        async for _ in self:
            pass
        return self.result

    @property
    def result(self) -> StreamResult:
        asm = self._asm
        final = asm.final
        end = self._ended_at or time.monotonic()
        start = self._started_at
        return StreamResult(
            text=asm.text,
            thinking=asm.thinking,
            done=final is not None,
            done_reason=asm.adapter.done_reason(final) if final is not None else None,
            eval_count=asm.tokens,
            tokens_exact=asm.tokens_exact,
            prompt_eval_count=asm.adapter.prompt_tokens(final) if final is not None else None,
            attempts=self._policy.attempts,
            retries=self._policy.retries,
            resumes=len(asm.seams),
            seams=list(asm.seams),
            verified=asm.verified,
            history=list(self._attempts.history),
            time_to_first_token=(self._first_token_at - start)
            if start is not None and self._first_token_at is not None
            else None,
            total_time=(end - start) if start is not None else None,
        )

    # --- reading -----------------------------------------------------------------

    async def _advance(self) -> None:
        """Open the stream's next attempt, or read a body not of our transport (which
        ``__anext__`` reads itself): at least one chunk into ``_out``, or finish, or
        raise."""
        read = self._read
        if read is None:
            if self._started_at is None:
                self._started_at = time.monotonic()
                self._attempts.start(self._started_at)
            # Awaited here, not in a helper coroutine: every frame of the opening chain
            # is held by every stream that waits for its headers at once.
            attempts = self._attempts
            failed: BaseException | None = None
            try:
                opened = await attempts.try_open()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                failed = exc
            if failed is not None:
                opened = await attempts.open_retrying(failed)
            self._begin(opened)
            return
        now = time.monotonic()
        # Reads that bring only part of a line do not restart the wait for the next
        # record (a 1 byte/s "slowloris" body). A body read through httpx cannot be
        # asked whether bytes are waiting, as our transport's stream is: after a caller
        # that held the last record past the limit, the wait starts now.
        since = self._waiting_since
        limit = self._limit
        if since is None or since + limit < now:
            since = self._waiting_since = now
        until = since + limit
        deadline = self._policy.deadline
        if until > deadline:
            until = deadline
        failure: BaseException | None
        try:
            data = await read(until - now)
        except _READ_ENDS as exc:
            failure = self._read_ended(exc, since, until, limit)
        else:
            failure = self._consume(data)
        await self._settle(failure)

    def _consume(self, data: bytes) -> BaseException | None:
        """A read's bytes: its chunks delivered into ``_out``. Returns what broke the
        attempt, if anything did (a bad record, a limit)."""
        if self._inflate is not None:
            data = self._inflate.decompress(data)
        self._body_left -= len(data)
        if self._body_left < 0:
            limit = self._cfg.max_output_bytes
            return failures.output_limit_error(
                f"{limit - self._body_left} bytes of response body exceed max_output_bytes={limit}",
                self._policy.endpoint,
            )
        first = self._attempt_first_chunk
        assert self._reader is not None
        try:
            chunks = self._reader.read(data)
        except (MalformedChunkError, ServerReportedError, TruncatedStreamError) as exc:
            if isinstance(exc, MalformedChunkError) and exc.html and first:
                exc = failures.not_an_api(exc, self._response)
            self._deliver(exc.chunks_before)
            return exc
        except ProtocolError as exc:
            return exc
        if not chunks:
            return None
        now = self._waiting_since = time.monotonic()  # the next record's wait begins
        if first:
            self._limit = self._idle.timeout
            self._first_chunk(now)
        else:
            self._limit = self._idle.observe(now - self._last_read)
        self._last_read = now
        asm = self._asm
        self._out.extend(asm.accept(chunks))  # _deliver's, on the per-record path
        if asm.final is not None:
            self._attempts.record("done")
            self._finish()
        elif not asm.diverged and asm.attempt_floor > self._token_cap:
            return failures.output_limit_error(
                f"{asm.attempt_floor} tokens or more received for a limit of "
                f"{self._planner.token_limit} tokens: the server ignores the limit",
                self._policy.endpoint,
            )
        return None

    async def _settle(self, failure: BaseException | None) -> None:
        """After a read: resume or give up on a failure, close a finished response,
        abandon a diverged continuation."""
        if failure is not None:
            await self._fail(failure)
        elif self._asm.final is not None:
            await self._close_response()
        elif self._asm.diverged:
            await self._diverged()

    def _read_ended(
        self, exc: BaseException, since: float, until: float, limit: float
    ) -> BaseException | None:
        """What a read that raised means for the attempt: the body's end (None: the
        stream had its last chunk), a stall or the total deadline (``since``: when the
        wait began), or the transport's error itself."""
        if isinstance(exc, StopAsyncIteration):
            return self._end_of_body()
        if isinstance(exc, ReadDeadline):
            return self._silence_error(since, until, limit)
        return exc

    def _silence_error(self, started: float, until: float, limit: float) -> StreamError:
        """The read's deadline passed: a stall (resumed) or the total deadline (given up)."""
        if until >= self._policy.deadline:
            return self._policy.deadline_error(None)
        return failures.stall_error(
            time.monotonic() - started,
            limit,
            first_chunk=self._attempt_first_chunk,
            endpoint=self._policy.endpoint,
        )

    def _first_chunk(self, now: float) -> None:
        """The attempt's first chunk came (the stream's first token, if it is the first)."""
        self._attempt_first_chunk = False
        self._policy.on_first_chunk()
        if self._first_token_at is None:
            self._first_token_at = now

    def _deliver(self, chunks: list[Any]) -> None:
        """Chunks into ``_out`` (as ``_consume`` does, which has its own copy of this:
        calling it from there measured 0.85k instructions a record)."""
        if self._attempt_first_chunk and chunks:
            self._first_chunk(time.monotonic())
        asm = self._asm
        self._out.extend(asm.accept(chunks))
        if asm.final is not None:  # done
            self._attempts.record("done")
            self._finish()

    def _end_of_body(self) -> StreamError | None:
        failure = self._flush_inflater()
        if failure is not None:
            return failure
        assert self._reader is not None
        rest = self._reader.close()
        if self._asm.done:
            return None
        if self._asm.unspent:
            return TruncatedStreamError(
                "the resumed request ended by length, but the tokens of the text it carried "
                "were only bounded (the server counted none): the caller's budget may not be "
                "spent, so the stream starts over, counted by the server"
            )
        if rest:
            return TruncatedStreamError(
                f"body ended in the middle of a line ({len(rest)} bytes, no newline)",
                partial_line=rest,
            )
        return TruncatedStreamError(
            "body ended before the stream's final chunk (`done: true` / `[DONE]`)"
        )

    def _flush_inflater(self) -> StreamError | None:
        """A compressed body ended: decode what the decompressor still held."""
        inflate, self._inflate = self._inflate, None
        if inflate is None:
            return None
        assert self._reader is not None
        try:
            tail = inflate.flush()
            chunks = self._reader.read(tail) if tail else []
        except (MalformedChunkError, ServerReportedError, TruncatedStreamError) as exc:
            self._deliver(exc.chunks_before)
            return exc
        except ProtocolError as exc:
            return exc
        if chunks:
            self._deliver(chunks)
        return None

    # --- attempts ----------------------------------------------------------------

    def _begin(self, opened: Opened) -> None:
        """The attempt's headers came: read its body from now on."""
        self._response, self._inflate = opened.response, opened.inflate
        self._reader = opened.reader
        self._read, self._watched = body_reader(opened.response)
        direct = direct_body(opened.response)
        # read directly where the deadlines here (time.monotonic) are the loop's
        monotonic = direct is not None and loop_clock(direct.loop) is time.monotonic
        self._h2 = direct if monotonic else None
        self._attempt_first_chunk = True
        self._idle.reset()
        self._waiting_since = None
        self._limit = self._cfg.first_token_timeout

    async def _fail(self, exc: BaseException) -> None:
        """The current attempt broke after headers: resume, retry, or give up."""
        await self._close_response()
        if self._asm.done:
            return  # the stream completed; what broke afterwards does not matter
        if self._asm.diverged:
            return await self._diverged()  # abandoned anyway: its failure does not count
        due, finished = await self._attempts.fail(exc)
        self._out.extend(due)
        if finished:
            self._finish()

    async def _diverged(self) -> None:
        """The continuation did not regenerate the held-back text: abandon this attempt
        (RST_STREAM: the server stops) and flag the seam, or end (``on_divergence``)."""
        await self._close_response()
        due, finished = self._attempts.diverged()
        self._out.extend(due)
        if finished:
            self._finish()

    # --- ending ------------------------------------------------------------------

    def _finish(self) -> None:
        """Mark the end; the caller of ``_deliver`` closes the response."""
        self._closed = True
        if self._watched is not None:
            self._watched.close()
        self._ended_at = time.monotonic()
        self._ctx.streams.discard(self)

    async def _close_response(self) -> None:
        response, self._response, self._read, self._h2 = self._response, None, None, None
        watched, self._watched = self._watched, None
        if watched is not None:
            watched.close()
        if response is not None:
            with contextlib.suppress(Exception):
                await response.aclose()

    async def _abort(self) -> None:
        if self._closed and self._response is None:
            return
        self._closed = True
        if self._ended_at is None:
            self._ended_at = time.monotonic()
        await self._close_response()
        self._ctx.streams.discard(self)

    def __del__(self) -> None:
        # A caller that breaks out of ``async for`` and drops the stream still must not
        # leave the upstream generating: close the response from the event loop.
        if self._response is not None and not self._closed:
            self._ctx.spawn(self._close_response())
