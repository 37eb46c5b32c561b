"""One HTTP/2 stream: its receive state and the response body httpx iterates.

The connection's ``data_received`` appends DATA payloads to :attr:`H2Stream.chunks`
and wakes the single waiter (a plain Future) directly: no queue, no lock, no task.
The consumer takes everything buffered at once, so a reader that falls behind gets
large pieces instead of one small chunk per wake-up.

The per-stream idle timer measures how long the *consumer* has been waiting for
this stream's next byte; traffic on other streams cannot reset it. It costs one
timer per timeout period, not one per chunk: the timer re-arms itself lazily.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import StallError
from .windows import ReceiveWindow

if TYPE_CHECKING:
    from .connection import H2ClientConnection


class H2Stream:
    """Receive-side state of one request/response exchange on a connection."""

    __slots__ = (
        "_timer",
        "body_timeout",
        "chunks",
        "conn",
        "ended",
        "error",
        "eval_at",
        "h2_stream",
        "h2_window",
        "headers",
        "idle_since",
        "rate",
        "read_bytes",
        "request_done",
        "status",
        "stream_id",
        "timeout",
        "unacked",
        "waiter",
        "window",
    )

    def __init__(
        self, conn: H2ClientConnection, stream_id: int, window: int, timeout: float | None
    ) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.status = 0  # 0 until the response headers arrive
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.unacked = 0  # flow-controlled bytes received but not yet read by the consumer
        self.ended = False  # END_STREAM seen: chunks hold the rest of the body
        self.request_done = False  # we sent END_STREAM
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.window = ReceiveWindow(window)
        self.timeout = timeout  # idle timeout for the current phase (first data, then body)
        self.body_timeout = timeout  # the gap allowed between chunks once data flows
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.h2_stream: Any = None  # h2's H2Stream (window + content-length bookkeeping)
        self.h2_window: Any = None  # its inbound WindowManager
        # Adaptive sizing (flow.py): bytes read since eval_at, smoothed read rate (B/s).
        self.read_bytes = 0
        self.eval_at = 0.0
        self.rate = 0.0

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """Record why the stream failed (first cause wins) and wake the consumer."""
        if self.error is None:
            self.error = exc
        self.wake()

    async def wait(self) -> None:
        """Wait for any change (headers, data, end, error), bounded by the idle timeout."""
        loop = self.conn.loop
        waiter = loop.create_future()
        self.waiter = waiter
        timeout = self.timeout
        if timeout is not None:
            now = self.idle_since = loop.time()
            deadline = now + timeout
            timer = self._timer
            if timer is None or timer.when() > deadline:  # none yet, or set for a longer bound
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._on_timer)
        try:
            await waiter
        finally:
            self.waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self.waiter
        timeout = self.timeout
        if waiter is None or waiter.done() or timeout is None:
            return  # not waiting now; the next wait() re-arms
        loop = self.conn.loop
        deadline = self.idle_since + timeout
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._on_timer)
            return
        what = "response headers" if not self.status else "data"
        waiter.set_exception(
            StallError(
                f"no {what} on HTTP/2 stream {self.stream_id} for {timeout:.3g}s "
                "(per-stream idle timeout; other streams do not reset it)",
                waited=timeout,
                endpoint=self.conn.endpoint,
            )
        )

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class H2ResponseStream(httpx.AsyncByteStream):
    """The response body. ``aclose()`` before the end sends RST_STREAM(CANCEL)."""

    def __init__(self, stream: H2Stream, coalesce: bool = True) -> None:
        self._stream = stream
        self._closed = False
        self._coalesce = coalesce

    async def __aiter__(self) -> AsyncIterator[bytes]:
        s = self._stream
        chunks = s.chunks
        conn = s.conn
        coalesce = self._coalesce
        while True:
            if chunks:
                s.timeout = s.body_timeout  # first data seen: the idle timeout applies
                n = s.unacked
                if coalesce or len(chunks) == 1:
                    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    chunks.clear()
                    if n:
                        s.unacked = 0
                        conn.stream_data_consumed(s, n)
                    yield data
                else:  # one DATA frame per read (coalesce_reads=False)
                    data = chunks.pop(0)
                    n = min(len(data), n) if chunks else n
                    if n:
                        s.unacked -= n
                        conn.stream_data_consumed(s, n)
                    yield data
            elif s.error is not None:
                raise s.error
            elif s.ended:
                return
            else:
                await s.wait()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._stream.conn.close_stream(self._stream)
