"""Many readers' deadlines on one loop timer (a timing wheel), not one asyncio timer each.

asyncio keeps its timers in a heap of Python objects ordered by a Python ``__lt__``:
arming, firing or cancelling one costs a heap operation of about log2(n) Python calls
(about 40k instructions a firing and its re-arm with 100 streams open, counted with
cachegrind). A stall deadline that follows the stream's pace fires about once per
``idle_timeout_factor`` records, so with one timer per stream that heap is paid on
the hot path.

Here a deadline is rounded up to the next tick of ``resolution`` seconds and filed
under it; one loop timer fires at the earliest tick that has entries and tells each
reader filed there (:meth:`Due.on_due`), which re-files itself if its deadline moved.
A reader is told at most ``resolution`` late and never early; filing is a dict insert,
dropping a filing a dict delete, and the ticks are plain ints in a heap (C compares).
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Protocol

#: Seconds between ticks: how late a deadline may be noticed (never early).
RESOLUTION = 0.05


class Due(Protocol):
    def on_due(self, tick: int) -> None:
        """The tick this reader was filed under has come (it may be a stale filing)."""


class DeadlineWheel:
    """Deadlines in loop time, filed by tick; one ``loop.call_at`` for all of them."""

    __slots__ = ("_heap", "_loop", "_per_tick", "_ticks", "_timer", "_timer_tick", "resolution")

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = RESOLUTION) -> None:
        if resolution <= 0:
            raise ValueError(f"resolution must be > 0 seconds, got {resolution!r}")
        self._loop = loop
        self.resolution = resolution
        self._per_tick = 1.0 / resolution
        self._ticks: dict[int, dict[Due, None]] = {}
        self._heap: list[int] = []  # the ticks in _ticks, earliest first
        self._timer: asyncio.TimerHandle | None = None
        self._timer_tick = 0

    def add(self, reader: Due, at: float) -> int:
        """Files ``reader`` under the first tick after ``at``; returns that tick (for
        :meth:`discard`). Its time is ``tick * resolution``, always later than ``at``."""
        tick = int(at * self._per_tick) + 1
        due = self._ticks.get(tick)
        if due is None:
            self._ticks[tick] = {reader: None}
            heapq.heappush(self._heap, tick)
            if self._timer is None or tick < self._timer_tick:
                self._arm(tick)
        else:
            due[reader] = None
        return tick

    def discard(self, reader: Due, tick: int) -> None:
        """Drops ``reader``'s filing under ``tick`` (the tick itself stays until it comes)."""
        due = self._ticks.get(tick)
        if due is not None:
            due.pop(reader, None)

    def __len__(self) -> int:
        """Filings not yet told."""
        return sum(len(due) for due in self._ticks.values())

    def _arm(self, tick: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(tick * self.resolution, self._fire)
        self._timer_tick = tick

    def _fire(self) -> None:
        self._timer = None
        # the tick the timer was armed for is due even if the loop ran it a hair early
        last = max(self._loop.time() * self._per_tick, self._timer_tick)
        heap = self._heap
        ticks = self._ticks
        try:
            while heap and heap[0] <= last:
                tick = heapq.heappop(heap)
                for reader in ticks.pop(tick, ()):
                    try:
                        reader.on_due(tick)  # may file it again, always under a later tick
                    except Exception as exc:  # one reader's bug must not blind the others
                        self._loop.call_exception_handler(
                            {"message": "DeadlineWheel: on_due failed", "exception": exc}
                        )
        finally:
            if heap:
                self._arm(heap[0])
