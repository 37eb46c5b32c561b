"""The response body httpx iterates: one stream's reader, with its own idle timer.

The reader parks a plain Future on its stream (``H2Stream.waiter``) and the
connection resolves it when the core reports news: no queue, no lock, no task.
It takes everything buffered at once (or one DATA frame per read with
``coalesce_reads=False``) and tells the connection what it consumed, which
reopens the stream's window.

The idle timer measures how long *this reader* has been waiting for its
stream's next byte; traffic on other streams cannot reset it. It costs one
filing per timeout period, not one per chunk: the reader re-files itself lazily,
on its connection's :class:`~resilient_stream.transport.deadlines.DeadlineWheel`
(one loop timer for all its streams, at most ``RESOLUTION`` late, never early).
Two bounds, both optional: ``first`` until the first DATA frame (headers
included: a model may be loading), then ``idle`` between chunks.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import httpx

from ..errors import StallError
from .connection import H2ClientConnection
from .stream import H2Stream

#: The ``httpx.Response.extensions`` key under which the transport hands out the
#: :class:`H2ResponseStream` itself, so a reader can skip httpx's forwarding layers.
BODY_EXTENSION = "resilient_stream.body"


class ReadDeadline(Exception):
    """:meth:`H2ResponseStream.read` waited past the deadline its caller gave it."""


class H2ResponseStream(httpx.AsyncByteStream):
    """The response body. ``aclose()`` before the end sends RST_STREAM(CANCEL)."""

    def __init__(
        self,
        conn: H2ClientConnection,
        stream: H2Stream,
        *,
        first: float | None,
        idle: float | None,
        coalesce: bool = True,
    ) -> None:
        self._conn = conn
        self._stream = stream
        self._timeout = first  # the bound of the current phase: first data, then idle
        self._idle = idle
        self._coalesce = coalesce
        self._closed = False
        self._idle_since = 0.0
        self._until = 0.0  # loop time: the deadline a caller of read() gave (0.0: none)
        self._wheel = conn.deadlines
        self._tick = 0  # the wheel tick this reader is filed under (0: none)
        # a deadline before this needs an earlier tick (a float compare per wait, no call)
        self._refile_below = math.inf

    @property
    def stream(self) -> H2Stream:
        return self._stream

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop whose clock :meth:`wait`'s ``until`` is in."""
        return self._conn.loop

    def wait(self, until: float = 0.0) -> asyncio.Future[None]:
        """What to await for any news (headers, data, end, error), bounded by the idle
        timer and, if given, by ``until`` (loop time; past it, :class:`ReadDeadline`).

        The Future itself, not a coroutine around it: a read that waits costs no
        coroutine (one a record on every path). It stays parked on the stream once
        resolved or cancelled; whoever resolves it, and :meth:`on_due`, skip a done one,
        and the next wait replaces it."""
        loop = self._conn.loop
        waiter = loop.create_future()
        s = self._stream
        s.waiter = waiter
        timeout = self._timeout
        self._until = until
        if timeout is not None or until:
            deadline = until
            if timeout is not None:
                now = self._idle_since = loop.time()
                if not until or now + timeout < until:
                    deadline = now + timeout
            if deadline < self._refile_below:  # not filed yet, or filed for a longer bound
                self._file(deadline)
        return waiter

    def _file(self, deadline: float) -> None:
        wheel = self._wheel
        if self._tick:
            wheel.discard(self, self._tick)
        self._tick = tick = wheel.add(self, deadline)
        self._refile_below = (tick - 1) * wheel.resolution

    def on_due(self, tick: int) -> None:
        """The wheel's tick: fail the wait if its deadline has passed, else re-file."""
        if tick != self._tick:
            # a filing dropped while its tick was being told (discard cannot reach a
            # tick the wheel has already taken out)
            return
        self._tick = 0
        self._refile_below = math.inf
        s = self._stream
        waiter = s.waiter
        timeout = self._timeout
        until = self._until
        if waiter is None or waiter.done() or (timeout is None and not until):
            return  # not waiting now; the next wait() re-arms
        loop = self._conn.loop
        now = loop.time()
        if until and until <= now:
            waiter.set_exception(ReadDeadline())
            return
        deadline = self._idle_since + timeout if timeout is not None else until
        if until and until < deadline:
            deadline = until
        if now < deadline:
            self._file(deadline)
            return
        what = "response headers" if not s.status else "data"
        waiter.set_exception(
            StallError(
                f"no {what} on HTTP/2 stream {s.stream_id} for {timeout:.3g}s "
                "(per-stream idle timeout; other streams do not reset it)",
                waited=timeout or 0.0,
                endpoint=self._conn.endpoint,
            )
        )

    def _cancel_timer(self) -> None:
        if self._tick:
            self._wheel.discard(self, self._tick)
            self._tick = 0
            self._refile_below = math.inf

    def _take(self) -> bytes:
        """What is buffered (all of it, or one DATA frame without coalescing); credits
        the stream's window for it. Only call with ``stream.chunks`` non-empty."""
        s = self._stream
        chunks = s.chunks
        self._timeout = self._idle  # first data seen: the idle bound applies
        n = s.unacked
        if self._coalesce or len(chunks) == 1:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            if n:
                s.unacked = 0
                self._conn.stream_data_consumed(s, n)
            return data
        data = chunks.pop(0)  # one DATA frame per read (coalesce_reads=False)
        n = min(len(data), n) if chunks else n
        if n:
            s.unacked -= n
            self._conn.stream_data_consumed(s, n)
        return data

    #: For a reader that checks ``stream.chunks`` and calls :meth:`wait` itself (the SDK
    #: pass-through: one coroutine less per read than :meth:`read`).
    take = _take

    async def __aiter__(self) -> AsyncIterator[bytes]:
        s = self._stream
        chunks = s.chunks
        while True:
            if chunks:
                yield self._take()
            elif s.error is not None:
                raise s.error
            elif s.ended:
                return
            else:
                await self.wait()

    async def read(self, within: float | None = None) -> bytes:
        """The next piece of the body, like ``__aiter__`` without an async generator:
        raises ``StopAsyncIteration`` at the end. For readers that pay per layer per
        chunk (``ResilientStream`` finds it through :data:`BODY_EXTENSION`).

        ``within``: seconds this read may wait for news before :class:`ReadDeadline`
        (on the same lazily re-armed timer as the idle bound: no timer per read)."""
        s = self._stream
        chunks = s.chunks
        until = 0.0
        while True:
            if chunks:
                return self._take()
            if s.error is not None:
                raise s.error
            if s.ended:
                raise StopAsyncIteration
            if within is not None and not until:
                until = self._conn.loop.time() + max(within, 1e-9)
            await self.wait(until)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.close()

    def close(self) -> None:
        """Done with the stream (also before its response existed): reset it if open."""
        self._cancel_timer()
        self._conn.close_stream(self._stream)
