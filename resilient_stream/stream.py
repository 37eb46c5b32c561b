"""``ResilientStream``: the async iterator a caller holds (the reading side).

It reads the current attempt's body, frames and decodes it, watches for
stalls (one lazily re-armed timer per stream) and hands chunks to the
assembler; the attempts themselves (open, retry, resume, give up) are
``AttemptLoop``'s job (attempts.py).

Leaving ``async for`` early, ``aclose()``, ``async with`` exit or cancelling
the task closes the HTTP response, which on our transport sends RST_STREAM
(CANCEL) so the server stops generating.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

import httpx

from .attempts import AttemptLoop
from .errors import (
    MalformedChunkError,
    OutputLimitError,
    ProtocolError,
    ServerReportedError,
    StallError,
    StreamError,
    TruncatedStreamError,
)
from .result import StreamResult

ChunkT = TypeVar("ChunkT")


class ResilientStream(AttemptLoop[ChunkT]):
    """Async iterator of typed chunks that survives interruptions.

    After the end, ``result`` holds the full text and how it was obtained.
    """

    # --- public API --------------------------------------------------------------

    def __aiter__(self) -> ResilientStream[ChunkT]:
        return self

    async def __anext__(self) -> ChunkT:
        while not self._out:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            try:
                await self._advance()
            except asyncio.CancelledError:
                await self._abort()
                raise
            except BaseException as exc:
                await self._abort()
                if not self._out:
                    raise
                self._error = exc  # deliver what came before the error first
        return self._out.popleft()

    async def __aenter__(self) -> ResilientStream[ChunkT]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
            prompt_eval_count=asm.adapter.prompt_tokens(final) if final is not None else None,
            attempts=self._attempts,
            retries=self._retries,
            resumes=len(asm.seams),
            seams=list(asm.seams),
            history=list(self._history),
            time_to_first_token=(self._first_token_at - start)
            if start is not None and self._first_token_at is not None
            else None,
            total_time=(end - start) if start is not None else None,
        )

    # --- the attempt loop ----------------------------------------------------------

    async def _advance(self) -> None:
        """Produce at least one chunk into ``_out``, or finish, or raise."""
        if self._started_at is None:
            self._started_at = time.monotonic()
            self._deadline = self._started_at + self._cfg.total_timeout
            self._plan = self._planner.initial()
        if self._body is None:
            await self._open()
            return
        now = time.monotonic()
        # Progress is complete records, not bytes: the wait for the next record began
        # when the last one was delivered (or the attempt's headers came), and reads that
        # bring only part of a line do not restart it (a 1 byte/s "slowloris" body).
        since = self._waiting_since
        if since is None:
            since = self._waiting_since = now
        limit = self._cfg.first_token_timeout if self._attempt_first_chunk else self._idle.timeout
        until = min(since + limit, self._deadline)
        watchdog = self._watchdog
        watchdog.arm(until - now)
        failure: BaseException | None = None
        try:
            data = await self._body.__anext__()
            if self._inflate is not None:
                data = self._inflate.decompress(data)
            self._body_bytes += len(data)
            if self._body_bytes > self._max_body_bytes:
                failure = self._output_limit_error(
                    f"{self._body_bytes} bytes of response body exceed max_output_bytes="
                    f"{self._cfg.max_output_bytes}"
                )
        except StopAsyncIteration:
            failure = self._end_of_body()
            if failure is None:
                return
        except asyncio.CancelledError:
            if not watchdog.expired():
                raise
            failure = self._silence_error(since, until, limit)
        except (httpx.TransportError, StreamError, OSError) as exc:
            failure = exc
        finally:
            watchdog.disarm()
        if failure is not None:
            await self._fail(failure)
            return
        try:
            chunks = self._decoder.decode_lines(self._framer.feed(data))
        except (MalformedChunkError, ServerReportedError, TruncatedStreamError) as exc:
            if isinstance(exc, MalformedChunkError) and exc.html and self._attempt_first_chunk:
                exc = self._not_an_api(exc)
            self._deliver(exc.chunks_before)
            await self._fail(exc)
            return
        except ProtocolError as exc:
            await self._fail(exc)
            return
        if chunks:
            now = time.monotonic()
            self._waiting_since = None
            if not self._attempt_first_chunk:
                self._idle.observe(now - self._last_read)
            self._last_read = now
            self._deliver(chunks)
            if self._asm.done:
                await self._close_response()
            elif self._asm.tokens > self._token_cap:
                await self._fail(
                    self._output_limit_error(
                        f"{self._asm.tokens} chunks received for a limit of "
                        f"{self._planner.token_limit} tokens: the server ignores the limit"
                    )
                )

    def _not_an_api(self, exc: MalformedChunkError) -> MalformedChunkError:
        """A web page where the stream should be: the URL is wrong, retrying will not help."""
        media = self._response.headers.get("content-type", "") if self._response else ""
        exc.message = (
            f"not an Ollama/OpenAI API: the server answered an HTML page "
            f"({media.split(';')[0] or 'no content-type'}, {len(exc.line)} bytes) instead "
            "of a stream; check the URL"
        )
        exc.retryable = False
        return exc

    def _output_limit_error(self, why: str) -> OutputLimitError:
        return OutputLimitError(
            f"stopped a stream that sent far more than asked ({why}); the output so far "
            "was delivered and the upstream request cancelled",
            endpoint=self._endpoint(),
        )

    def _silence_error(self, started: float, until: float, limit: float) -> StreamError:
        """The watchdog fired: a stall (resumed) or the total deadline (given up)."""
        if until >= self._deadline:
            return self._deadline_error(None)
        waited = time.monotonic() - started
        what = (
            "first_token_timeout"
            if self._attempt_first_chunk
            else f"idle timeout {limit:.2f}s, adapted to the stream's pace"
        )
        return StallError(
            f"no data on this stream for {waited:.2f}s ({what})",
            waited=waited,
            endpoint=self._endpoint(),
        )

    def _deliver(self, chunks: list[Any]) -> None:
        if self._attempt_first_chunk and chunks:
            self._attempt_first_chunk = False
            self._failures_in_a_row = 0
            if self._replica is not None:
                self._replica.budget.on_success()
                self._client.replicas.on_success(self._replica)
            if self._first_token_at is None:
                self._first_token_at = time.monotonic()
        out = self._asm.accept(chunks)
        self._out.extend(out)
        if self._asm.done:
            self._record("done")
            self._finish()

    def _end_of_body(self) -> StreamError | None:
        failure = self._flush_inflater()
        if failure is not None:
            return failure
        rest = self._framer.close()
        if self._asm.done:
            return None
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
        try:
            tail = inflate.flush()
            chunks = self._decoder.decode_lines(self._framer.feed(tail)) if tail else []
        except (MalformedChunkError, ServerReportedError, TruncatedStreamError) as exc:
            self._deliver(exc.chunks_before)
            return exc
        except ProtocolError as exc:
            return exc
        if chunks:
            self._deliver(chunks)
        return None

    def __del__(self) -> None:
        # A caller that breaks out of ``async for`` and drops the stream still must not
        # leave the upstream generating: close the response from the event loop.
        if self._response is not None and not self._closed:
            self._client.spawn(self._close_response())
