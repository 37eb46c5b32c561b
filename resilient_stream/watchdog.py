"""Reading a response body under a deadline, without a timer per read.

On our transport the body's own reader takes the deadline
(:meth:`~resilient_stream.transport.response.H2ResponseStream.read` with
``within``: its idle timer, one per stream, re-armed lazily). Any other httpx
body is read under a :class:`StallWatchdog` (:class:`WatchedBody`).
:func:`body_reader` picks; either raises
:class:`~resilient_stream.transport.response.ReadDeadline` when the deadline
passes, and ``StopAsyncIteration`` at the end of the body.

The watchdog: one lazily re-armed timer per stream, instead of a timeout context per read.

``asyncio.timeout()`` around every read costs a timer handle and two heap
operations per chunk; on a paced token stream that is a fifth of the client's
CPU. The watchdog keeps a single ``TimerHandle``: each wait only moves the
deadline (an attribute write). When the timer fires early because the
deadline moved, it re-arms itself at the new one; when it fires late, it
cancels the waiting task, and the waiter turns that cancellation into a stall
(``expired()``), leaving any other cancellation untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from .transport.response import BODY_EXTENSION, H2ResponseStream, ReadDeadline

#: Reads a body's next piece within the given seconds (see the module docstring).
BodyReader = Callable[[float], Awaitable[bytes]]


class StallWatchdog:
    __slots__ = ("_deadline", "_fired", "_handle", "_loop", "_task")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    def arm(self, delay: float) -> None:
        """Watch the current task for ``delay`` seconds, until :meth:`disarm`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + delay
        self._task = asyncio.current_task()
        handle = self._handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(deadline, self._check)

    def disarm(self) -> None:
        self._deadline = None
        self._task = None

    def expired(self) -> bool:
        """In ``except CancelledError``: was it us, and only us? (Consumes the flag.)"""
        if not self._fired:
            return False
        self._fired = False
        task = asyncio.current_task()
        return task is not None and task.uncancel() == 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.disarm()

    def _check(self) -> None:
        self._handle = None
        deadline, task, loop = self._deadline, self._task, self._loop
        if deadline is None or task is None or loop is None:
            return
        if loop.time() < deadline:
            self._handle = loop.call_at(deadline, self._check)
            return
        self._fired = True
        self._deadline = None
        task.cancel()


class WatchedBody:
    """Any httpx body, read under a :class:`StallWatchdog` (made here: only such
    bodies need one)."""

    __slots__ = ("_next", "_watchdog")

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._next = body.__anext__
        self._watchdog = StallWatchdog()

    async def read(self, within: float) -> bytes:
        watchdog = self._watchdog
        watchdog.arm(within)
        try:
            return await self._next()
        except asyncio.CancelledError:
            if watchdog.expired():
                raise ReadDeadline from None
            raise
        finally:
            watchdog.disarm()

    def close(self) -> None:
        self._watchdog.close()


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time`` as a plain function: ``time.monotonic`` itself when the loop's clock
    is asyncio's own (one Python call fewer per record, and a deadline in
    ``time.monotonic`` is one in loop time), else the bound method (uvloop)."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def direct_body(response: httpx.Response) -> H2ResponseStream | None:
    """Our transport's stream, when it is what ``response`` reads (a wrapping transport
    may put another body under the same extensions), else None."""
    direct = response.extensions.get(BODY_EXTENSION)
    stream = response.stream
    if isinstance(direct, H2ResponseStream) and (
        stream is direct or getattr(stream, "_stream", None) is direct  # httpx's wrapper
    ):
        return direct
    return None


def body_reader(response: httpx.Response) -> tuple[BodyReader, WatchedBody | None]:
    """How to read ``response``'s body, and the watchdog to close with it (None: none).

    On our transport, straight from its response stream: each httpx layer is an
    async generator that only forwards, and costs its resumption on every chunk.
    Only when that stream is what the response reads (a wrapping transport may put
    another body under the same extensions); otherwise through httpx, watched.
    """
    direct = direct_body(response)
    if direct is not None:
        return direct.read, None
    watched = WatchedBody(response.stream.__aiter__())  # type: ignore[union-attr]
    return watched.read, watched
