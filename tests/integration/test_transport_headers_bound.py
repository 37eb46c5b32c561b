"""The ``"headers"`` bound of the ``stream_timeouts`` extension (timeouts.py).

A caller that bounds the wait for a response's headers (StreamClient's attempts,
ResilientTransport's first attempt: ``first_token_timeout``) used to arm an asyncio
timer around every request: a heap push and a cancel of Python objects ordered by a
Python ``__lt__`` (41k instructions a stream, counted with cachegrind). On HTTP/2 the
transport now files the bound on its connection's timing wheel, as it does the idle
bound; over HTTP/1.1 it still bounds the call that returns the headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from resilient_stream import StreamClient, errors
from resilient_stream.config import StreamConfig
from resilient_stream.refserver.faults import Fault, RequestInfo
from resilient_stream.refserver.server import ReferenceServer
from resilient_stream.sdk import ResilientTransport
from resilient_stream.transport import MultiplexedTransport
from resilient_stream.transport.timeouts import STREAM_TIMEOUTS, request_timeouts

BODY = {"model": "m", "prompt": "x", "options": {"num_predict": 3}}
HEADERS_ONLY = {STREAM_TIMEOUTS: {"headers": 0.3, "first": None, "idle": None}}


def never_answer_prompt_hang(info: RequestInfo) -> Fault | None:
    return Fault("never_answer") if info.body.get("prompt") == "hang" else None


@contextmanager
def asyncio_timers(loop: asyncio.AbstractEventLoop) -> Iterator[list[float]]:
    """The deadlines ``asyncio.timeout`` arms on ``loop`` while the block runs."""
    armed: list[float] = []
    real_call_at = loop.call_at

    def call_at(when: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if isinstance(getattr(callback, "__self__", None), asyncio.Timeout):
            armed.append(when)
        return real_call_at(when, callback, *args, **kw)

    loop.call_at = call_at  # type: ignore[method-assign]
    try:
        yield armed
    finally:
        del loop.call_at  # the instance attribute: the class's method again


def test_the_headers_key_is_read_and_defaults_to_no_bound() -> None:
    cfg = StreamConfig(first_token_timeout=60.0, idle_timeout=5.0)
    t = request_timeouts({STREAM_TIMEOUTS: {"headers": 2.5, "first": None, "idle": None}}, cfg)
    assert (t.headers, t.first, t.idle, t.read) == (2.5, None, None, None)
    assert request_timeouts({STREAM_TIMEOUTS: {"idle": 1.0}}, cfg).headers is None
    assert request_timeouts({STREAM_TIMEOUTS: "config"}, cfg).headers is None
    assert request_timeouts({"timeout": {"read": 3.0}}, cfg).headers is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http1"])
async def test_no_headers_within_the_bound_is_a_headers_timeout_error(http2: bool) -> None:
    async with ReferenceServer(faults=never_answer_prompt_hang) as srv:
        transport = MultiplexedTransport(http2=http2)
        async with httpx.AsyncClient(transport=transport, timeout=None) as client:
            with pytest.raises(errors.HeadersTimeoutError) as info:
                await client.post(
                    srv.url + "/api/generate",
                    json={**BODY, "prompt": "hang"},
                    extensions=HEADERS_ONLY,
                )
            # the bound ends only the wait for headers: a stream that answers is unbounded
            r = await client.post(srv.url + "/api/generate", json=BODY, extensions=HEADERS_ONLY)
            assert r.status_code == 200 and r.content.count(b"\n") == 4
    assert isinstance(info.value, errors.StallError)  # retryable, like any stall
    assert info.value.waited == 0.3 and "0.3s" in str(info.value)


@pytest.mark.timeout(30)
async def test_the_headers_bound_also_ends_a_wait_for_a_stream_slot() -> None:
    # one connection, one stream: the second request waits for a slot; its headers
    # bound (0.3 s) ends that wait long before pool_timeout (20 s) would
    async with ReferenceServer(faults=never_answer_prompt_hang) as srv:
        transport = MultiplexedTransport(
            max_connections=1, max_streams_per_connection=1, pool_timeout=20.0
        )
        async with httpx.AsyncClient(transport=transport, timeout=None) as client:
            holder = asyncio.ensure_future(
                client.post(srv.url + "/api/generate", json={**BODY, "prompt": "hang"})
            )
            for _ in range(200):  # until the holder's stream is open (bounded)
                if srv.stats.requests:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(errors.HeadersTimeoutError) as info:
                await client.post(srv.url + "/api/generate", json=BODY, extensions=HEADERS_ONLY)
            holder.cancel()
            with pytest.raises(asyncio.CancelledError):
                await holder
    assert "stream slot" in str(info.value)
    assert srv.stats.requests == 1  # the second request never went out


@pytest.mark.timeout(30)
async def test_the_headers_bound_also_ends_a_wait_for_the_connections_handshake() -> None:
    # a peer that takes the TCP connection and never sends its SETTINGS: the bound
    # (0.3 s) ends the wait long before connect_timeout (20 s) would
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client goes away

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        transport = MultiplexedTransport(connect_timeout=20.0)
        async with httpx.AsyncClient(transport=transport, timeout=None) as client:
            with pytest.raises(errors.HeadersTimeoutError) as info:
                await client.post(
                    f"http://127.0.0.1:{port}/api/generate", json=BODY, extensions=HEADERS_ONLY
                )
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert "handshake" in str(info.value) and len(held) == 1


@pytest.mark.timeout(60)
async def test_streamclient_and_resilient_transport_arm_no_asyncio_timer_per_stream() -> None:
    # 20 streams each, over HTTP/2: the headers are bounded on the timing wheel. Before,
    # every attempt (and every ResilientTransport first attempt) armed one.
    loop = asyncio.get_running_loop()
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with StreamClient(srv.url) as client:
            await client.generate(model="m", prompt="warm", options={"num_predict": 2}).collect()
            with asyncio_timers(loop) as armed:
                results = await asyncio.gather(
                    *(
                        client.generate(
                            model="m", prompt=f"p{i}", options={"num_predict": 3}
                        ).collect()
                        for i in range(20)
                    )
                )
            assert [r.done for r in results] == [True] * 20
            assert armed == []
        async with httpx.AsyncClient(transport=ResilientTransport(), timeout=None) as http:
            await http.post(srv.url + "/api/generate", json=BODY)
            with asyncio_timers(loop) as armed:
                answers = await asyncio.gather(
                    *(http.post(srv.url + "/api/generate", json=BODY) for _ in range(20))
                )
            assert [a.content.count(b"\n") for a in answers] == [4] * 20
            assert armed == []


@pytest.mark.timeout(30)
async def test_streamclient_still_retries_a_request_that_never_answers() -> None:
    # the first attempt gets no headers within first_token_timeout (on the wheel now):
    # the stream retries and the second attempt answers
    plan_calls: list[int] = []

    def first_never_answers(info: RequestInfo) -> Fault | None:
        plan_calls.append(1)
        return Fault("never_answer") if len(plan_calls) == 1 else None

    cfg = StreamConfig(first_token_timeout=0.3, backoff_initial=0.01, backoff_max=0.02)
    async with ReferenceServer(stop_probability=0.0, faults=first_never_answers) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            stream = client.generate(model="m", prompt="x", options={"num_predict": 3})
            result = await stream.collect()
    assert result.attempts == 2 and result.done and result.retries == 1
    assert [(h.number, h.outcome) for h in result.history] == [(2, "done")]
    assert srv.stats.requests == 2
