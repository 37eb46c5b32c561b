"""Which bound applies to what: httpx's timeouts read the HTTP/2 way (timeouts.py).

``read=None`` is no read timeout, as in httpx: a caller that detects stalls
itself (``StreamClient``) owns that decision alone. The ``stream_timeouts``
request extension asks for the transport's own two-phase bound explicitly.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from resilient_stream import errors
from resilient_stream.config import StreamConfig
from resilient_stream.refserver.faults import Fault, RequestInfo
from resilient_stream.refserver.server import ReferenceServer
from resilient_stream.transport import MultiplexedTransport
from resilient_stream.transport.deadlines import DeadlineWheel
from resilient_stream.transport.timeouts import STREAM_TIMEOUTS, request_timeouts

CFG = StreamConfig(
    connect_timeout=3.0, pool_timeout=4.0, first_token_timeout=60.0, idle_timeout=5.0
)


def test_read_none_is_no_read_bound_and_connect_and_pool_fall_back_to_the_config() -> None:
    t = request_timeouts(
        {"timeout": {"connect": None, "read": None, "write": None, "pool": None}}, CFG
    )
    assert (t.first, t.idle, t.write, t.read) == (None, None, None, None)
    assert (t.connect, t.pool) == (3.0, 4.0)
    assert request_timeouts({}, CFG).idle is None  # no timeout extension at all


def test_read_bounds_both_phases_and_write_bounds_the_upload() -> None:
    t = request_timeouts({"timeout": {"connect": 1, "read": 2, "write": 7, "pool": 3}}, CFG)
    assert (t.connect, t.pool, t.first, t.idle, t.write, t.read) == (1, 3, 2, 2, 7, 2)


def test_the_stream_timeouts_extension_replaces_read() -> None:
    read_one = {"timeout": {"read": 1.0}}
    t = request_timeouts({**read_one, STREAM_TIMEOUTS: "config"}, CFG)
    assert (t.first, t.idle) == (60.0, 5.0)
    assert t.read == 60.0  # HTTP/1.1 has one bound for every read: the larger
    t = request_timeouts({**read_one, STREAM_TIMEOUTS: {"idle": 0.5}}, CFG)
    assert (t.first, t.idle) == (60.0, 0.5)  # a key left out: the config's
    t = request_timeouts({STREAM_TIMEOUTS: {"first": None, "idle": 2.0}}, CFG)
    assert (t.first, t.idle, t.read) == (None, 2.0, None)


@pytest.mark.parametrize("bad", [{"firts": 1.0}, "yes", 3.0])
def test_a_malformed_stream_timeouts_extension_is_an_error_that_names_it(bad: object) -> None:
    with pytest.raises(errors.ConfigError) as info:
        request_timeouts({STREAM_TIMEOUTS: bad}, CFG)
    assert STREAM_TIMEOUTS in str(info.value)


def stall_after_first_token(info: RequestInfo) -> Fault | None:
    return Fault("stall", after_tokens=1)


@pytest.mark.timeout(30)
async def test_without_a_read_timeout_the_transport_never_ends_a_quiet_stream() -> None:
    # StreamClient passes read=None and watches each stream itself: the transport's
    # config bounds (0.2 s here) must not race it. Before, read=None meant "use
    # first_token_timeout / idle_timeout", so this stream failed after 0.2 s.
    async with ReferenceServer(stop_probability=0.0, faults=stall_after_first_token) as srv:
        transport = MultiplexedTransport(first_token_timeout=0.2, idle_timeout=0.2)
        body = {"model": "m", "prompt": "x", "options": {"num_predict": 3}}
        async with httpx.AsyncClient(transport=transport, timeout=None) as client:
            async with client.stream("POST", srv.url + "/api/generate", json=body) as r:
                received = b""
                with pytest.raises(TimeoutError):  # our own bound, not the transport's
                    async with asyncio.timeout(1.0):
                        async for data in r.aiter_raw():
                            received += data
                assert received.count(b"\n") == 1  # the first token came, then silence

            # Asked for explicitly, the config's bounds apply.
            with pytest.raises(errors.StallError) as info:
                async with client.stream(
                    "POST",
                    srv.url + "/api/generate",
                    json=body,
                    extensions={STREAM_TIMEOUTS: "config"},
                ) as r:
                    await r.aread()
            assert info.value.waited == 0.2


def stall_the_prompt_named_stall(info: RequestInfo) -> Fault | None:
    return Fault("stall", after_tokens=2) if info.body.get("prompt") == "stall" else None


@pytest.mark.timeout(60)
async def test_fifty_streams_stall_deadlines_share_one_loop_timer_and_still_catch_a_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each stream's idle bound is filed on its connection's DeadlineWheel, not armed as
    # an asyncio timer of its own: the loop sees a handful of the wheel's timers for 50
    # streams (before: at least one per stream), and the stalled one still fails.
    loop = asyncio.get_running_loop()
    wheel_timers: list[float] = []
    real_call_at = loop.call_at

    def call_at(when: float, callback: object, *args: object, **kw: object) -> object:
        if isinstance(getattr(callback, "__self__", None), DeadlineWheel):
            wheel_timers.append(when)
        return real_call_at(when, callback, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_at", call_at)
    plan = stall_the_prompt_named_stall
    async with ReferenceServer(stop_probability=0.0, tokens_per_second=50, faults=plan) as srv:
        transport = MultiplexedTransport(max_connections=1)
        timeout = httpx.Timeout(5.0, read=0.5)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:

            async def one(prompt: str) -> int:
                body = {"model": "m", "prompt": prompt, "options": {"num_predict": 20}}
                async with client.stream("POST", srv.url + "/api/generate", json=body) as r:
                    return (await r.aread()).count(b"\n")

            results = await asyncio.gather(
                *(one(f"p{i}") for i in range(49)), one("stall"), return_exceptions=True
            )
    assert results[:49] == [21] * 49  # 20 tokens and the final line each
    assert isinstance(results[49], errors.StallError)
    assert 1 <= len(wheel_timers) < 25
