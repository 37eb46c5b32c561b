"""DeadlineWheel: many readers' deadlines on one loop timer, told never early and at
most one tick late; a dropped filing is never told. On a real event loop, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilient_stream.config import ConfigError, StreamConfig
from resilient_stream.transport.deadlines import RESOLUTION, DeadlineWheel


class Reader:
    def __init__(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self.loop = loop
        self.at = at
        self.told: list[tuple[int, float]] = []  # (tick, loop time when told)

    def on_due(self, tick: int) -> None:
        self.told.append((tick, self.loop.time()))


def _counting_call_at(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    calls: list[Any] = []
    real = loop.call_at

    def call_at(when: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        if isinstance(
            getattr(callback, "__self__", None), DeadlineWheel
        ):  # the wheel's (not asyncio.sleep's)
            calls.append(when)
        return real(when, callback, *args, **kw)

    monkeypatch.setattr(loop, "call_at", call_at)
    return calls


async def _until(cond: Any, turns: int = 2000) -> None:
    for _ in range(turns):  # bounded: 2000 x 1 ms at most
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met")


async def test_readers_are_told_after_their_deadline_never_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(loop, resolution=0.01)
    now = loop.time()
    readers = [Reader(loop, now + 0.003 * i) for i in range(1, 21)]
    for r in readers:
        tick = wheel.add(r, r.at)
        assert r.at < tick * wheel.resolution <= r.at + wheel.resolution  # one tick late at most
    await _until(lambda: all(r.told for r in readers))
    for r in readers:
        assert len(r.told) == 1
        tick, when = r.told[0]
        assert when >= r.at  # never early
        assert tick == int(r.at / wheel.resolution) + 1
    assert len(wheel) == 0


async def test_many_readers_share_one_loop_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    calls = _counting_call_at(loop, monkeypatch)
    wheel = DeadlineWheel(loop, resolution=0.05)
    at = loop.time() + 0.02
    readers = [Reader(loop, at) for _ in range(1000)]
    for r in readers:
        wheel.add(r, at)
    await _until(lambda: all(r.told for r in readers))
    assert len(calls) == 1  # one timer for the thousand, not a thousand timers


async def test_a_discarded_filing_is_never_told() -> None:
    loop = asyncio.get_running_loop()
    wheel = DeadlineWheel(loop, resolution=0.01)
    at = loop.time() + 0.02
    kept, dropped = Reader(loop, at), Reader(loop, at)
    wheel.add(kept, at)
    wheel.discard(dropped, wheel.add(dropped, at))
    await _until(lambda: bool(kept.told))
    await asyncio.sleep(0.03)
    assert dropped.told == []


async def test_an_earlier_filing_moves_the_loop_timer_earlier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    calls = _counting_call_at(loop, monkeypatch)
    wheel = DeadlineWheel(loop, resolution=0.01)
    now = loop.time()
    late, soon = Reader(loop, now + 60.0), Reader(loop, now + 0.02)
    wheel.add(late, late.at)
    wheel.add(soon, soon.at)
    await _until(lambda: bool(soon.told))
    assert calls[0] > now + 59 and calls[1] < now + 1  # re-armed for the earlier tick
    assert late.told == [] and len(wheel) == 1


def test_the_wheels_default_resolution_is_the_configs() -> None:
    # the transport's default (ConnectionSettings, a bare wheel) and the config key's
    assert StreamConfig().deadline_resolution == RESOLUTION


def test_resolution_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="resolution"):
            DeadlineWheel(loop, resolution=0)
    finally:
        loop.close()
    with pytest.raises(ConfigError, match="deadline_resolution"):
        StreamConfig(deadline_resolution=0.0)


class Broken(Reader):
    def on_due(self, tick: int) -> None:
        super().on_due(tick)
        raise RuntimeError("a reader's bug")


async def test_a_reader_that_raises_does_not_keep_the_others_from_being_told() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        wheel = DeadlineWheel(loop, resolution=0.01)
        at = loop.time() + 0.02
        broken, same_tick, later = Broken(loop, at), Reader(loop, at), Reader(loop, at + 0.05)
        for r in (broken, same_tick, later):
            wheel.add(r, r.at)
        await _until(lambda: bool(later.told))
        assert broken.told and same_tick.told
        assert [type(e["exception"]) for e in errors] == [RuntimeError]
    finally:
        loop.set_exception_handler(None)
