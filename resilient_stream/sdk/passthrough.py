"""The pass-through: the first attempt's body reaches the SDK as the server sent it.

While the first attempt holds, nothing is decoded: each read is scanned for record
boundaries (:meth:`~resilient_stream.sdk.wire.Wire.scan`, or its first case inlined:
:attr:`~resilient_stream.sdk.wire.Wire.plain`, or the last record's prefix:
:meth:`~resilient_stream.sdk.wire.Wire.prefix_of`), whole records go to the SDK at once
and are kept, the rest waits for the next read. Liveness is watched as
:class:`~resilient_stream.stream.ResilientStream` watches it (complete records, the
first-token and adaptive idle timeouts, ``total_timeout``, one lazily re-armed
timer), and so are the output limits.

When the attempt breaks, the resume engine takes over without having decoded a
byte so far: :class:`Replay` is the body of its first attempt, the forwarded bytes
in one read, then what was received but not forwarded, then the failure itself. The
engine decodes them once, books attempt 1 and its failure as it would have, and
resumes. ``on_replayed`` fires when it asks for more than the forwarded bytes:
every chunk it yields from then on is new to the SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import httpx

from .. import failures
from ..buffering import IdleTimeoutPolicy
from ..config import StreamConfig
from ..errors import StreamError
from ..transport.response import ReadDeadline
from ..watchdog import BodyReader, WatchedBody, body_reader, direct_body, loop_clock
from .wire import DONE, ERROR, FINISH_NULL, STOP, Wire

_NO_LIMIT = 1 << 62
#: Forwarded reads kept as one ``bytes`` per this many (a power of two): a long answer
#: then holds its replay bytes in few objects, not an object and a list slot per read
#: (about 41 bytes each, 16 KB on a 400-record answer).
FOLD = 64


_IdleConstants = tuple[float, float, float, float, int, float, float]
#: The last config's idle-timeout constants (a config is frozen: one entry, by identity).
_idle_cache: tuple[StreamConfig, _IdleConstants] | None = None


def _idle_of(cfg: StreamConfig) -> _IdleConstants:
    """``IdleTimeoutPolicy.constants()`` for ``cfg`` and a fresh policy's first timeout
    (what every stream starts with), made once per config, not once per stream."""
    global _idle_cache
    cached = _idle_cache
    if cached is not None and cached[0] is cfg:
        return cached[1]
    idle = IdleTimeoutPolicy.for_config(cfg)
    value = (*idle.constants(), idle.timeout)
    _idle_cache = (cfg, value)
    return value


class PassThrough:
    """Forwards one response's whole records; after the body, says how it ended.

    :meth:`body` is what the SDK iterates: one async generator whose frame holds the
    read state in locals (no attribute traffic per read), with the record-boundary
    scan, the limits and the stall deadline in its loop. ``then``: what follows a body
    that broke (the resume engine's chunks, see :class:`Replay`), yielded from the
    same generator. The attributes say how the first attempt ended, once it has.
    """

    __slots__ = (
        "_cfg",
        "_endpoint",
        "_response",
        "_then",
        "_token_limit",
        "_wire",
        "done",
        "failure",
        "forwarded",
        "pending",
    )

    def __init__(
        self,
        response: httpx.Response,
        wire: Wire,
        config: StreamConfig,
        *,
        token_limit: int | None,
        endpoint: str,
        then: Callable[[PassThrough], AsyncGenerator[bytes, None]] | None = None,
    ) -> None:
        self._response = response
        self._wire = wire
        self._cfg = config
        self._endpoint = endpoint
        self._token_limit = token_limit
        self._then = then
        #: Everything forwarded to the SDK, in reads (every ``FOLD`` of them joined).
        self.forwarded: list[bytes] = []
        #: Received but not forwarded (a partial record, held records, an error record).
        self.pending = b""
        #: Why the body ended before its last record (None: it just ended, or ``done``).
        self.failure: BaseException | None = None
        self.done = False

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The body the SDK reads: the first attempt's whole records, then ``then``'s.

        One generator for both (every level costs per read); closing it releases the
        first attempt's response and closes what followed it."""
        # on our transport, its stream read directly with a deadline (its lazily re-armed
        # idle timer: no watchdog, no generator), in loop time; any other body under a
        # watchdog
        cfg = self._cfg
        response = self._response
        h2 = direct_body(response)
        s = h2.stream if h2 is not None else None
        now: Callable[[], float] = time.monotonic
        watched: WatchedBody | None = None
        read: BodyReader
        if h2 is not None:
            read = h2.read
            now = loop_clock(asyncio.get_running_loop())
        else:
            read, watched = body_reader(response)
        # observe()'s arithmetic, on locals (tests pin it to the policy, record by record)
        factor, decay, floor, cap, warmup, early, first_limit = _idle_of(cfg)
        peak = 0.0
        seen = 0
        wire = self._wire
        scan = wire.scan
        plain = wire.plain
        # Wire.steady's case, inline: only reads longer than it (never, without one), and
        # its last byte but two first: a read whose byte there differs cannot end with it
        steady = wire.steady or b""
        steady_len = len(steady) if steady else _NO_LIMIT
        steady_at = steady[-3] if steady else -1
        # the prefix of the last read the scan forwarded whole as one text record: a read
        # with that prefix goes through the rest of the scan's first case here, with no
        # call (Wire.prefix_of)
        learn = wire.prefix_of if wire.learns else None
        finish_null, error = FINISH_NULL, ERROR
        prefix: bytes | None = None
        lead = 0
        settled = False
        forwarded = self.forwarded
        forward = forwarded.append
        folded = 0  # forwarded[:folded]: FOLD reads each, joined
        token_limit = self._token_limit
        # a server that sends far more than asked ignores the limit (counted in reads
        # that carried records: never more than the records, so never too early)
        record_cap = 2 * token_limit + 16 if token_limit is not None else _NO_LIMIT
        # the next read count at which the cap or a fold is due (one compare per read)
        check = min(record_cap + 1, FOLD + 1)
        max_bytes = cfg.max_output_bytes or _NO_LIMIT
        last = now()
        deadline = last + cfg.total_timeout
        limit = cfg.first_token_timeout
        until = min(last + limit, deadline)
        pending = b""
        total = records = 0
        first = True
        failure: BaseException | None = None
        try:
            while True:
                try:
                    if s is not None:
                        # our transport's stream, read here: its wait() takes the
                        # deadline (loop time) on its own lazily re-armed timer
                        assert h2 is not None
                        while not s.chunks:
                            if s.error is not None:
                                raise s.error
                            if s.ended:
                                raise StopAsyncIteration
                            await h2.wait(until)
                        data = h2.take()
                    else:
                        t0 = now()
                        if until <= t0 < deadline:
                            # A body read through httpx cannot be asked whether bytes
                            # are waiting, as our transport's stream is: after an SDK
                            # that held the last read past the limit, the wait starts now.
                            until = t0 + limit
                            if until > deadline:
                                until = deadline
                        data = await read(until - t0)
                except StopAsyncIteration:
                    break  # no last record: a truncation (the engine names it)
                except ReadDeadline:
                    if until >= deadline:
                        failure = failures.deadline_error(
                            None, total_timeout=cfg.total_timeout, attempts=1,
                            endpoint=self._endpoint,
                        )  # fmt: skip
                    else:
                        failure = failures.stall_error(
                            now() - last, limit, first_chunk=first, endpoint=self._endpoint
                        )
                    break
                except (httpx.TransportError, StreamError, OSError) as exc:
                    failure = exc
                    break
                n = len(data)
                total += n
                if (
                    n > steady_len
                    and not pending
                    and data[-3] == steady_at
                    and data.endswith(steady)
                    and data.find(b"\n") == n - 1
                ):
                    out, what = data, 0  # Ollama's text line: the scan's first case, inline
                elif (
                    plain is not None
                    and not pending
                    and data
                    and data[-1] == 10
                    and data.find(plain[0]) < 0
                    and data.find(plain[1]) < 0
                ):
                    out, what = data, 0  # the scan's first case, without the call
                elif (
                    prefix is not None
                    and not pending
                    and data.startswith(prefix)
                    and data[-1] == 10
                    and data[lead] != 34  # '"': the text is not empty
                    # the prefix holds no newline and no "error" (Wire.prefix_of), and
                    # ends with '"content":"': a match starts at its last quote or after
                    and data.find(b"\n", lead) == len(data) - 2
                    and (settled or data.find(finish_null, lead) > 0)
                    and data.find(error, lead - 1) < 0
                ):
                    out, what = data, 0  # Sse.scan's first case, its text key known
                else:
                    buf = pending + data if pending else data
                    end, what = scan(buf)
                    if not end:
                        pending = buf
                        if what or total > max_bytes:
                            failure = self._end(what, total)
                            break
                        continue
                    if end == len(buf):
                        out, pending = buf, b""
                        if learn is not None and not what:
                            known = learn(buf)
                            if known is not None:
                                prefix, settled = known
                                lead = len(prefix)
                    else:
                        out, pending = buf[:end], buf[end:]
                records += 1  # reads with records: a lower bound, and no scan
                if records >= check:
                    if records > record_cap:
                        pending = out + pending
                        failure = self._limit_error(
                            f"{records} records received for a limit of "
                            f"{token_limit} tokens: the server ignores the limit"
                        )
                        break
                    # the FOLD reads forwarded since the last fold, as one bytes
                    forwarded[folded:] = [b"".join(forwarded[folded:])]
                    folded += 1
                    check = min(record_cap + 1, records + FOLD)
                forward(out)
                t = now()
                # the wait for the next record starts now (partial reads do not
                # restart it: a 1 byte/s body stalls)
                if first:
                    first = False
                    limit = first_limit
                else:
                    peak *= decay
                    gap = t - last
                    if gap > peak:
                        peak = gap
                    seen += 1
                    limit = factor * peak
                    if seen < warmup and limit < early:
                        limit = early
                    if limit < floor:
                        limit = floor
                    elif limit > cap:
                        limit = cap
                last = t
                until = t + limit
                if until > deadline:
                    until = deadline
                if what or total > max_bytes:
                    failure = self._end(what, total)
                    yield out
                    break
                yield out
        finally:
            self.pending = pending
            if failure is not None:
                self.failure = failure
            if watched is not None:
                watched.close()
            await self._release()
        if self.done or self._then is None:
            return
        tail = self._then(self)
        try:
            async for out in tail:
                yield out
        finally:
            await tail.aclose()

    async def _release(self) -> None:
        with contextlib.suppress(Exception):
            await self._response.aclose()

    def _end(self, what: int, total: int) -> StreamError | None:
        """The first attempt ends here (the last record, a hand-over, or too many bytes):
        ``done`` set, or the failure to book (None for a hand-over to the engine)."""
        if what == DONE:
            self.done = True
            return None
        if what == STOP:
            return None
        return self._limit_error(
            f"{total} bytes of response body exceed max_output_bytes={self._cfg.max_output_bytes}"
        )

    def _limit_error(self, why: str) -> StreamError:
        return failures.output_limit_error(why, self._endpoint)


class Replay(httpx.AsyncByteStream):
    """The engine's view of the first attempt: the forwarded bytes, the rest, the failure."""

    def __init__(self, passed: PassThrough, on_replayed: Callable[[], None]) -> None:
        self._forwarded = b"".join(passed.forwarded)
        self._pending = passed.pending
        self._failure = passed.failure
        self._on_replayed = on_replayed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._forwarded:
            yield self._forwarded
        self._on_replayed()
        if self._pending:
            yield self._pending
        if self._failure is not None:
            raise self._failure

    async def aclose(self) -> None:
        """Nothing to release: the first attempt's response is closed already."""
