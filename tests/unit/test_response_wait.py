"""H2ResponseStream.wait hands out the Future itself (no coroutine a read); a waiter
that ended (resolved, timed out, cancelled) stays parked on the stream until the next
wait, and nothing that wakes or times out a stream trips over it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from resilient_stream.transport.connection import _wake
from resilient_stream.transport.deadlines import DeadlineWheel
from resilient_stream.transport.response import H2ResponseStream, ReadDeadline
from resilient_stream.transport.stream import H2Stream


class _Conn:
    """What H2ResponseStream asks of its connection."""

    endpoint = "test"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deadlines = DeadlineWheel(loop)
        self.consumed = 0

    def stream_data_consumed(self, stream: H2Stream, n: int) -> None:
        self.consumed += n

    def close_stream(self, stream: H2Stream) -> None:
        pass


def _body(idle: float | None = None) -> tuple[H2ResponseStream, H2Stream]:
    s = H2Stream(1, 65535)
    s.status = 200
    body = H2ResponseStream(cast(Any, _Conn(asyncio.get_running_loop())), s, first=idle, idle=idle)
    return body, s


def _arrive(s: H2Stream, data: bytes) -> None:
    """What the connection does for a DATA frame: buffer it, wake the reader."""
    s.chunks.append(data)
    _wake(s)


async def test_a_wait_is_the_future_itself() -> None:
    body, s = _body()
    waiter = body.wait()
    assert asyncio.isfuture(waiter)
    assert s.waiter is waiter
    _arrive(s, b"x")
    await asyncio.wait_for(waiter, 5)
    assert await body.read() == b"x"


async def test_a_cancelled_read_leaves_the_stream_readable() -> None:
    body, s = _body()
    reader = asyncio.create_task(body.read())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert s.waiter is not None and s.waiter.cancelled()
    _arrive(s, b"late")  # the wake skips the cancelled waiter
    assert await asyncio.wait_for(body.read(), 5) == b"late"


async def test_a_read_past_its_deadline_then_a_read_that_gets_data() -> None:
    body, s = _body()
    with pytest.raises(ReadDeadline):
        await asyncio.wait_for(body.read(within=0.01), 5)
    assert s.waiter is not None and s.waiter.done()
    later = asyncio.create_task(body.read(within=30))
    await asyncio.sleep(0)
    _arrive(s, b"next")
    assert await asyncio.wait_for(later, 5) == b"next"


async def test_the_idle_timer_skips_a_waiter_that_already_woke() -> None:
    body, s = _body(idle=0.05)
    reader = asyncio.create_task(body.read())
    await asyncio.sleep(0)
    _arrive(s, b"a")
    assert await asyncio.wait_for(reader, 5) == b"a"
    # the filing of that wait comes due with its waiter done: no error, nothing set
    await asyncio.sleep(0.15)
    assert s.waiter is not None and s.waiter.done() and s.waiter.exception() is None
    _arrive(s, b"b")
    assert await asyncio.wait_for(body.read(), 5) == b"b"
