"""The pass-through's stall deadline follows IdleTimeoutPolicy, record by record.

``PassThrough.body`` runs the policy's arithmetic on locals (a call per record costs
there), so this pins the copy to the policy: the body is fed records at known gaps on
a stand-in clock, and every deadline it waits with must be the one the policy gives.
In-process: one real ``H2ResponseStream`` on a connection stand-in, no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from resilient_stream import StreamConfig
from resilient_stream.buffering import IdleTimeoutPolicy
from resilient_stream.sdk import passthrough
from resilient_stream.sdk.passthrough import PassThrough
from resilient_stream.sdk.wire import Ndjson
from resilient_stream.transport.deadlines import DeadlineWheel
from resilient_stream.transport.response import BODY_EXTENSION, H2ResponseStream
from resilient_stream.transport.stream import H2Stream

RECORD = b'{"model":"m","response":" tok","done":false}\n'
LAST = b'{"model":"m","response":"","done":true}\n'

# warm-up (its timeout), fast gaps (the floor), a slow gap, a fast run (the peak
# decays), one gap past the cap, then fast again
GAPS = [0.01] * 12 + [0.2] + [0.05] * 30 + [5.0, 0.05]


class _Conn:
    endpoint = "test"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deadlines = DeadlineWheel(loop)

    def stream_data_consumed(self, stream: H2Stream, n: int) -> None:
        pass

    def close_stream(self, stream: H2Stream) -> None:
        pass


class _Recording(H2ResponseStream):
    """Our transport's body, noting the deadline of every wait."""

    untils: list[float]

    async def wait(self, until: float = 0.0) -> None:
        self.untils.append(until)
        await super().wait(until)


async def _deadlines(config: StreamConfig, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Feeds RECORD at GAPS (then LAST) on a stand-in clock; the deadlines waited with."""
    loop = asyncio.get_running_loop()
    clock = [loop.time() + 1000.0]  # ahead of the loop: its timer never fires here
    fake: Callable[[], float] = lambda: clock[0]  # noqa: E731
    monkeypatch.setattr(passthrough, "loop_clock", lambda _loop: fake)
    s = H2Stream(1, 65535)
    s.status = 200
    body = _Recording(_Conn(loop), s, first=None, idle=None)  # type: ignore[arg-type]
    body.untils = []
    inner = httpx.Response(200, stream=body, extensions={BODY_EXTENSION: body})
    passing = PassThrough(inner, Ndjson(), config, token_limit=None, endpoint="test")
    gen = passing.body()

    async def feed() -> None:
        for i, gap in enumerate([0.0, *GAPS, 0.01]):
            waiter = None
            for _ in range(100):  # until the body waits again (bounded)
                waiter = s.waiter
                if waiter is not None and not waiter.done():
                    break
                await asyncio.sleep(0)
            assert waiter is not None and not waiter.done()
            clock[0] += gap
            s.chunks.append(LAST if i == len(GAPS) + 1 else RECORD)
            waiter.set_result(None)

    async def read() -> list[bytes]:
        return [out async for out in gen]

    # bounded: a feeder that fails must not leave the body waiting on the far clock
    async with asyncio.timeout(30):
        _, got = await asyncio.gather(feed(), read())
    assert len(got) == len(GAPS) + 2 and passing.done
    return body.untils


def _expected(config: StreamConfig, start: float) -> list[float]:
    policy = IdleTimeoutPolicy.for_config(config)
    t = start
    out = [t + config.first_token_timeout, t + policy.timeout]  # before and after record 1
    for gap in GAPS:
        t += gap
        out.append(t + policy.observe(gap))
    return out


@pytest.mark.parametrize("adaptive", [True, False])
async def test_passthrough_waits_with_the_policys_deadline_after_every_record(
    adaptive: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StreamConfig.load(env={}, adaptive_idle_timeout=adaptive, total_timeout=10_000.0)
    untils = await _deadlines(config, monkeypatch)
    start = untils[0] - config.first_token_timeout
    expected = _expected(config, start)
    assert untils == pytest.approx(expected, abs=1e-9)
    limits = {round(b - a, 6) for a, b in zip([start, *_times(start)], expected[1:], strict=True)}
    if adaptive:  # the deadlines did follow the pace: floor, warm-up and cap all seen
        seen = {config.idle_timeout_floor, config.idle_timeout_warmup, config.idle_timeout}
        assert seen <= limits and len(limits) > 20
    else:
        assert limits == {config.idle_timeout}


def _times(start: float) -> list[float]:
    out, t = [], start
    for gap in GAPS:
        t += gap
        out.append(t)
    return out
