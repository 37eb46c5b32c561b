"""The pass-through: the first attempt's body reaches the SDK as the server sent it.

While the first attempt holds, nothing is decoded: each read is scanned for record
boundaries (:meth:`~resilient_stream.sdk.wire.Wire.scan`), whole records go to the
SDK at once and are kept, the rest waits for the next read. Liveness is watched as
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
from ..transport.response import H2ResponseStream, ReadDeadline
from ..transport.stream import H2Stream
from ..watchdog import BodyReader, WatchedBody, body_reader, direct_body, loop_clock
from .wire import DONE, STOP, Wire

_NO_LIMIT = 1 << 62


def _no_observe(gap: float) -> float:  # pragma: no cover - replaced before the first read
    raise AssertionError("observe before the first read")


class PassThrough:
    """Forwards one response's whole records; after the body, says how it ended.

    The body the SDK iterates (``__aiter__`` is itself, each read one ``__anext__``):
    no async generator in between, and the record-boundary scan, the limits and the
    stall deadline in that one method. ``then``: what follows a body that broke (the
    resume engine's chunks, see :class:`Replay`), iterated from the same ``__anext__``.
    """

    __slots__ = (
        "_cfg",
        "_deadline",
        "_endpoint",
        "_first",
        "_h2",
        "_idle",
        "_last",
        "_limit",
        "_max_bytes",
        "_now",
        "_observe",
        "_over",
        "_read",
        "_record_cap",
        "_records",
        "_response",
        "_s",
        "_scan",
        "_since",
        "_tail",
        "_then",
        "_token_limit",
        "_total",
        "_until",
        "_watched",
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
        self._scan = wire.scan  # bound once: it runs on every read
        self._cfg = config
        self._endpoint = endpoint
        self._token_limit = token_limit
        self._then = then
        # a server that sends far more than asked ignores the limit (counted in reads
        # that carried records: never more than the records, so never too early)
        self._record_cap = 2 * token_limit + 16 if token_limit is not None else _NO_LIMIT
        self._max_bytes = config.max_output_bytes or _NO_LIMIT
        #: Everything forwarded to the SDK, in reads.
        self.forwarded: list[bytes] = []
        #: Received but not forwarded (a partial record, held records, an error record).
        self.pending = b""
        #: Why the body ended before its last record (None: it just ended, or ``done``).
        self.failure: BaseException | None = None
        self.done = False
        self._read: BodyReader | None = None  # set by the first read
        self._watched: WatchedBody | None = None
        self._h2: H2ResponseStream | None = None
        self._s: H2Stream | None = None
        self._now: Callable[[], float] = time.monotonic
        self._tail: AsyncGenerator[bytes, None] | None = None
        #: The first attempt is over once the records forwarded last are out (None: not).
        self._over: bool | None = None
        self._total = self._records = 0
        self._first = True
        self._idle: IdleTimeoutPolicy | None = None
        self._observe: Callable[[float], float] = _no_observe
        self._since = self._last = self._until = self._deadline = self._limit = 0.0

    def __aiter__(self) -> PassThrough:
        return self

    async def __anext__(self) -> bytes:
        if self._over is not None:
            return await self._after()
        read = self._read
        if read is None:
            read = self._start()
        h2, s = self._h2, self._s
        pending = self.pending
        failure: BaseException | None = None
        while True:
            try:
                if s is not None:
                    # our transport's stream, read here: its wait() takes the deadline
                    # (loop time) on its own lazily re-armed timer
                    assert h2 is not None
                    while not s.chunks:
                        if s.error is not None:
                            raise s.error
                        if s.ended:
                            raise StopAsyncIteration
                        await h2.wait(self._until)
                    data = h2.take()
                else:
                    data = await read(self._until - self._now())
            except StopAsyncIteration:
                break  # no last record: a truncation (the engine names it)
            except ReadDeadline:
                failure = self._silence()
                break
            except (httpx.TransportError, StreamError, OSError) as exc:
                failure = exc
                break
            self._total += len(data)
            buf = pending + data if pending else data
            end, what = self._scan(buf)
            if end:
                if end == len(buf):
                    out, pending = buf, b""
                else:
                    out, pending = buf[:end], buf[end:]
                self._records += 1  # reads with records: a lower bound, and no scan
                if self._records > self._record_cap:
                    pending = out + pending
                    failure = self._limit_error(
                        f"{self._records} records received for a limit of "
                        f"{self._token_limit} tokens: the server ignores the limit"
                    )
                    break
                self.pending = pending
                self.forwarded.append(out)
                t = self._now()
                if self._first:
                    self._first = False
                    idle = self._idle
                    assert idle is not None
                    limit = idle.timeout
                else:
                    limit = self._observe(t - self._last)
                self._last = self._since = t
                # the wait for the next record starts now (partial reads do not
                # restart it: a 1 byte/s body stalls)
                self._limit = limit
                until = t + limit
                self._until = until if until < self._deadline else self._deadline
                if what == DONE:
                    self.done = True
                    self._over = True
                elif what == STOP or self._total > self._max_bytes:
                    self._over = True
                    self.failure = self._over_limit(what)
                return out
            pending = buf
            if what == DONE:
                self.done = True
                break
            if what == STOP or self._total > self._max_bytes:
                failure = self._over_limit(what)
                break
        self.pending = pending
        self.failure = failure
        self._over = True
        return await self._after()

    def _start(self) -> BodyReader:
        # on our transport, its stream read directly with a deadline (its lazily re-armed
        # idle timer: no watchdog, no generator), in loop time; any other body under a
        # watchdog
        read, self._watched = body_reader(self._response)
        self._read = read
        h2 = self._h2 = direct_body(self._response)
        if h2 is not None:
            self._s = h2.stream
            self._now = loop_clock(asyncio.get_running_loop())
        cfg = self._cfg
        self._idle = idle = IdleTimeoutPolicy(
            cap=cfg.idle_timeout,
            floor=cfg.idle_timeout_floor,
            factor=cfg.idle_timeout_factor,
            enabled=cfg.adaptive_idle_timeout,
            warmup_timeout=cfg.idle_timeout_warmup,
        )
        self._observe = idle.observe
        self._since = self._last = since = self._now()
        self._deadline = since + cfg.total_timeout
        self._limit = cfg.first_token_timeout
        self._until = min(since + self._limit, self._deadline)
        return read

    async def _after(self) -> bytes:
        """The first attempt is over: release it, then ``then``'s bytes (if it broke)."""
        tail = self._tail
        if tail is None:
            if self._over:
                self._over = False
                await self._release()
                if not self.done and self._then is not None:
                    tail = self._tail = self._then(self)
            if tail is None:
                raise StopAsyncIteration
        return await tail.__anext__()

    async def _release(self) -> None:
        if self._watched is not None:
            self._watched.close()
            self._watched = None
        with contextlib.suppress(Exception):
            await self._response.aclose()

    async def aclose(self) -> None:
        """The SDK stopped reading: the first attempt's response and what followed it."""
        self._over = False
        tail, self._tail = self._tail, None
        await self._release()
        if tail is not None:
            await tail.aclose()

    def _over_limit(self, what: int) -> StreamError | None:
        if what == STOP:
            return None
        return self._limit_error(
            f"{self._total} bytes of response body exceed max_output_bytes="
            f"{self._cfg.max_output_bytes}"
        )

    def _silence(self) -> StreamError:
        if self._until >= self._deadline:
            return failures.deadline_error(
                None, total_timeout=self._cfg.total_timeout, attempts=1, endpoint=self._endpoint
            )
        return failures.stall_error(
            self._now() - self._since,
            self._limit,
            first_chunk=self._first,
            endpoint=self._endpoint,
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
