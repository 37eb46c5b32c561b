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

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import httpx

from .. import failures
from ..buffering import IdleTimeoutPolicy
from ..config import StreamConfig
from ..errors import StreamError
from ..transport.response import ReadDeadline
from ..watchdog import body_reader
from .wire import DONE, STOP, Wire

_NO_LIMIT = 1 << 62


class PassThrough:
    """Forwards one response's whole records; after the body, says how it ended."""

    def __init__(
        self,
        response: httpx.Response,
        wire: Wire,
        config: StreamConfig,
        *,
        token_limit: int | None,
        endpoint: str,
    ) -> None:
        self._response = response
        self._wire = wire
        self._cfg = config
        self._endpoint = endpoint
        self._token_limit = token_limit
        # a server that sends far more than asked ignores the limit (counted in reads
        # that carried records: never more than the records, so never too early)
        self._record_cap = 2 * token_limit + 16 if token_limit is not None else _NO_LIMIT
        #: Everything forwarded to the SDK, in reads.
        self.forwarded: list[bytes] = []
        #: Received but not forwarded (a partial record, held records, an error record).
        self.pending = b""
        #: Why the body ended before its last record (None: it just ended, or ``done``).
        self.failure: BaseException | None = None
        self.done = False

    async def body(
        self, then: Callable[[PassThrough], AsyncIterator[bytes]] | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The forwarded bytes; if the body breaks, what ``then(self)`` yields (in this
        generator: no second level per read)."""
        cfg, wire = self._cfg, self._wire
        scan = wire.scan
        keep = self.forwarded.append
        # on our transport, its stream's own read with a deadline (its lazily re-armed
        # idle timer: no watchdog, no generator); any other body under a watchdog
        read, watched = body_reader(self._response)
        idle = IdleTimeoutPolicy(
            cap=cfg.idle_timeout,
            floor=cfg.idle_timeout_floor,
            factor=cfg.idle_timeout_factor,
            enabled=cfg.adaptive_idle_timeout,
            warmup_timeout=cfg.idle_timeout_warmup,
        )
        now = time.monotonic
        since = last = time.monotonic()
        deadline = since + cfg.total_timeout
        limit = cfg.first_token_timeout
        until = min(since + limit, deadline)
        max_bytes = cfg.max_output_bytes or _NO_LIMIT
        first, pending, total, records = True, b"", 0, 0
        failure: BaseException | None = None
        try:
            while True:
                try:
                    data = await read(until - now())
                except StopAsyncIteration:
                    break  # no last record: a truncation (the engine names it)
                except ReadDeadline:
                    failure = self._silence(since, until, deadline, limit, first)
                    break
                except (httpx.TransportError, StreamError, OSError) as exc:
                    failure = exc
                    break
                total += len(data)
                buf = pending + data if pending else data
                end, what = scan(buf)
                if end:
                    if end == len(buf):
                        out, pending = buf, b""
                    else:
                        out, pending = buf[:end], buf[end:]
                    records += 1  # reads with records: a lower bound, and no scan
                    if records > self._record_cap:
                        pending = out + pending
                        failure = self._limit(
                            f"{records} records received for a limit of {self._token_limit} "
                            "tokens: the server ignores the limit"
                        )
                        break
                    keep(out)
                    t = now()
                    if first:
                        first = False
                    else:
                        idle.observe(t - last)
                    last = since = t
                    # the wait for the next record starts now (partial reads do not
                    # restart it: a 1 byte/s body stalls)
                    limit = idle.timeout
                    until = t + limit
                    if until > deadline:
                        until = deadline
                    yield out
                else:
                    pending = buf
                if what == DONE:
                    self.done = True
                    return
                if what == STOP or total > max_bytes:
                    if what != STOP:
                        failure = self._limit(
                            f"{total} bytes of response body exceed max_output_bytes="
                            f"{cfg.max_output_bytes}"
                        )
                    break
        finally:
            if watched is not None:
                watched.close()
            self.pending = pending
            self.failure = failure
            with contextlib.suppress(Exception):
                await self._response.aclose()
        if then is not None:
            async for out in then(self):
                yield out

    def _silence(
        self, since: float, until: float, deadline: float, limit: float, first: bool
    ) -> StreamError:
        if until >= deadline:
            return failures.deadline_error(
                None, total_timeout=self._cfg.total_timeout, attempts=1, endpoint=self._endpoint
            )
        return failures.stall_error(
            time.monotonic() - since, limit, first_chunk=first, endpoint=self._endpoint
        )

    def _limit(self, why: str) -> StreamError:
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
