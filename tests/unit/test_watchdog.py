"""StallWatchdog: one lazily re-armed timer per stream; stalls vs real cancellations."""

from __future__ import annotations

import asyncio

import pytest

from resilient_stream.watchdog import StallWatchdog

pytestmark = pytest.mark.timeout(10)


async def test_silence_past_the_deadline_is_reported_as_expired() -> None:
    wd = StallWatchdog()
    wd.arm(0.05)
    with pytest.raises(asyncio.CancelledError):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert wd.expired()
            raise
    wd.close()


async def test_moving_the_deadline_keeps_one_timer_and_does_not_fire_early() -> None:
    wd = StallWatchdog()
    for _ in range(10):  # ten waits of 20 ms under a 100 ms timeout: never fires
        wd.arm(0.1)
        await asyncio.sleep(0.02)
        wd.disarm()
    wd.arm(0.1)
    await asyncio.sleep(0.02)
    assert not wd.expired()
    wd.close()


async def test_an_outside_cancellation_is_not_mistaken_for_a_stall() -> None:
    wd = StallWatchdog()

    async def waiter() -> str:
        wd.arm(5.0)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "stall" if wd.expired() else "cancelled"
        finally:
            wd.disarm()
        return "data"

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task == "cancelled"
    wd.close()


async def test_disarmed_watchdog_never_cancels() -> None:
    wd = StallWatchdog()
    wd.arm(0.02)
    wd.disarm()
    await asyncio.sleep(0.06)  # the timer fires, finds nothing to watch
    assert not wd.expired()
    wd.close()
