"""One lazily re-armed timer per stream, instead of a timeout context per read.

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
