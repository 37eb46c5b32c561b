"""Cancellation, leaks, liveness and HTTP/1.1 fallback of MultiplexedTransport (real sockets)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from structlog.testing import capture_logs
from support.transport_servers import h1_only_server, hypercorn_server, silent_h2_server

from resilient_stream import errors
from resilient_stream.refserver.faults import Fault, RequestInfo
from resilient_stream.refserver.server import ReferenceServer
from resilient_stream.transport import MultiplexedTransport


@pytest.mark.timeout(30)
async def test_closing_a_response_early_resets_the_stream_and_the_server_stops() -> None:
    # Stock httpcore never sends RST_STREAM on early close (httpcore #943/#1022).
    async with hypercorn_server() as (url, stats):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            async with client.stream("POST", url + "/gen", json={"n": 1000, "rate": 100}) as r:
                async for data in r.aiter_raw():
                    if data.count(b"\n") >= 1:
                        break  # leave early: the context manager closes the response
            for _ in range(100):
                if stats.disconnected:
                    break
                await asyncio.sleep(0.02)
            assert stats.disconnected == 1
            tokens = stats.tokens
            await asyncio.sleep(0.3)
            assert stats.tokens == tokens  # generation stopped
            assert stats.completed == 0
            # The connection is still healthy and reused.
            async with client.stream("POST", url + "/gen", json={"n": 3}) as r:
                assert (await r.aread()).count(b"\n") == 4
            assert transport.stats().connections_opened == 1


@pytest.mark.timeout(30)
async def test_cancelled_tasks_leak_no_stream_slot_buffer_or_task() -> None:
    async with hypercorn_server() as (url, stats):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            await client.post(url + "/gen", json={"n": 1})  # connection up, server idle
            tasks_before = len(asyncio.all_tasks())

            async def consume() -> None:
                async with client.stream("POST", url + "/gen", json={"n": 500, "rate": 50}) as r:
                    async for _ in r.aiter_raw():
                        pass

            tasks = [asyncio.create_task(consume()) for _ in range(50)]
            await asyncio.sleep(0.5)
            assert transport.stats().streams_active == 50
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            snapshot = transport.stats()
            assert snapshot.streams_active == 0
            assert snapshot.buffered_bytes == 0
            assert snapshot.connections == 1  # the connection survives the cancellations
            for _ in range(100):
                if stats.active == 0:
                    break
                await asyncio.sleep(0.02)
            assert stats.active == 0  # every RST_STREAM reached the server
            assert stats.disconnected == 50
            await asyncio.sleep(0.1)  # let the server's per-stream tasks finish
            assert len(asyncio.all_tasks()) <= tasks_before  # we left no task behind


@pytest.mark.timeout(30)
async def test_ping_timeout_detects_a_dead_connection_that_tcp_keeps_open() -> None:
    # Stock httpx has no PING keepalive: this request would wait for its read timeout
    # (or forever with timeout=None, the ollama-python default).
    async with silent_h2_server() as (url, seen):
        transport = MultiplexedTransport(ping_interval=0.2, ping_timeout=0.3)
        # read=60 is beyond the test's own timeout: only the PING check can end the request.
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            with capture_logs() as logs, pytest.raises(errors.ConnectionLostError) as info:
                await client.post(url + "/gen", json={"n": 1})
            events = [(e["event"], e["log_level"]) for e in logs]
            assert ("connection.dead", "warning") in events
            assert ("connection.closed", "info") in events  # one stream failed with it
            assert "PING" in str(info.value)
            assert info.value.retryable
            assert seen  # the request did reach the silent server
            assert transport.stats().connections == 0


@pytest.mark.timeout(30)
async def test_http1_only_server_is_detected_and_served_over_http1() -> None:
    async with h1_only_server() as (url, first_lines):
        transport = MultiplexedTransport()  # http2=True: tries h2c prior knowledge first
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            for _ in range(2):
                r = await client.post(url + "/gen", json={"n": 5})
                assert r.status_code == 200
                assert r.http_version == "HTTP/1.1"
                assert r.content.count(b"\n") == 6
            assert transport.stats().http1_origins == [url]
        assert first_lines[0].startswith(b"PRI * HTTP/2.0")  # it was tried once


@pytest.mark.timeout(30)
async def test_http2_false_speaks_http1_to_http_origins() -> None:
    async with hypercorn_server() as (url, stats):
        transport = MultiplexedTransport(http2=False)
        async with (
            httpx.AsyncClient(transport=transport, timeout=10) as client,
            client.stream("POST", url + "/gen", json={"n": 4}) as r,
        ):
            assert r.http_version == "HTTP/1.1"
            assert (await r.aread()).count(b"\n") == 5
        assert stats.protocols == {"1.1"}


@pytest.mark.timeout(30)
async def test_connect_refused_is_a_typed_connect_error() -> None:
    async with hypercorn_server() as (url, _):
        pass  # the port is closed now
    transport = MultiplexedTransport()
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        with pytest.raises(errors.ConnectError) as info:
            await client.post(url + "/gen", json={"n": 1})
        assert isinstance(info.value, httpx.ConnectError)
        assert transport.stats().streams_active == 0


@pytest.mark.timeout(30)
async def test_header_value_with_newline_is_refused_before_sending() -> None:
    async with hypercorn_server() as (url, stats):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            with pytest.raises(httpx.LocalProtocolError):
                await client.post(url + "/gen", json={"n": 1}, headers={"x-a": "1\r\nx-b: 2"})
            assert transport.stats().streams_active == 0
            assert await client.post(url + "/gen", json={"n": 1}, headers={"x-a": "ok"})
        assert stats.completed == 1


@pytest.mark.timeout(30)
async def test_pings_keep_a_quiet_healthy_connection_alive() -> None:
    # Token gaps (0.4 s) longer than ping_interval + ping_timeout: only ACKed PINGs
    # keep the connection, and the stream, alive.
    async with hypercorn_server() as (url, _):
        transport = MultiplexedTransport(ping_interval=0.1, ping_timeout=0.2)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            async with client.stream("POST", url + "/gen", json={"n": 3, "rate": 2.5}) as r:
                assert (await r.aread()).count(b"\n") == 4
            await asyncio.sleep(0.5)  # idle, still pinged
            assert transport.stats().connections == 1
            assert transport.stats().connections_opened == 1


@pytest.mark.timeout(30)
async def test_without_a_read_timeout_the_first_token_bound_applies_until_data_flows() -> None:
    # timeout=None (ollama-python's default) is no read timeout, as in httpx; the
    # "stream_timeouts": "config" extension asks for the config's two bounds instead.
    # The reference server sends its headers at once and the first token only after
    # 0.6 s (a model loading). That is within first_token_timeout (2 s) but beyond
    # idle_timeout (0.3 s), which applies only between later chunks.
    bounds = {"stream_timeouts": "config"}
    stall = fault_for_index(1, Fault("stall", after_tokens=1))
    async with ReferenceServer(first_token_delay=0.6, stop_probability=0.0, faults=stall) as srv:
        transport = MultiplexedTransport(first_token_timeout=2.0, idle_timeout=0.3)
        body = {"model": "m", "prompt": "x", "options": {"num_predict": 3}}
        async with httpx.AsyncClient(transport=transport, timeout=None) as client:
            async with client.stream(
                "POST", srv.url + "/api/generate", json=body, extensions=bounds
            ) as r:
                tokens_at_headers = srv.stats.tokens_generated
                assert (await r.aread()).count(b"\n") == 4
            assert tokens_at_headers == 0  # so the wait for the first token was in the body
            # Once data flows, a gap longer than idle_timeout is a stall (the longer
            # first-token bound no longer applies).
            with pytest.raises(errors.StallError) as info:
                async with client.stream(
                    "POST", srv.url + "/api/generate", json=body, extensions=bounds
                ) as r:
                    await r.aread()
            assert info.value.waited == 0.3  # idle_timeout, not first_token_timeout


def fault_for_index(index: int, fault: Fault) -> object:
    def plan(info: RequestInfo) -> Fault | None:
        return fault if info.index == index else None

    return plan
