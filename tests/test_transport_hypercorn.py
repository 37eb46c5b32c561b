"""MultiplexedTransport against hypercorn (a third-party HTTP/2 server), real sockets.

Each test pins down one place where the stock httpx/httpcore HTTP/2 path fails
(see DESIGN.md, "What the stock httpx/httpcore HTTP/2 path gets wrong").
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from test_transport_support import hypercorn_server

from resilient_stream import errors
from resilient_stream.transport import MultiplexedTransport


async def count_lines(client: httpx.AsyncClient, url: str, **body: object) -> int:
    async with client.stream("POST", url + "/gen", json=body) as response:
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"
        lines = 0
        async for data in response.aiter_raw():
            lines += data.count(b"\n")
        return lines


@pytest.mark.timeout(30)
async def test_streams_above_max_concurrent_streams_open_more_connections() -> None:
    # Stock httpcore queues streams 101..300 on the one connection: 3x the time.
    async with hypercorn_server(max_concurrent_streams=100) as (url, stats):
        transport = MultiplexedTransport(max_connections=10)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            await count_lines(client, url, n=1)  # warm: learn the server's limit
            started = time.monotonic()
            results = await asyncio.gather(
                *(count_lines(client, url, n=10, rate=10) for _ in range(300))
            )
            elapsed = time.monotonic() - started
            assert results == [11] * 300
            assert stats.max_active > 100  # truly concurrent, not queued
            assert transport.stats().connections == 3
            # ~1 s of tokens per stream; 3 waves of 100 would take >= 3 s.
            assert elapsed < 2.2, elapsed


@pytest.mark.timeout(30)
async def test_pool_timeout_when_every_connection_is_full_is_typed() -> None:
    async with hypercorn_server(max_concurrent_streams=2) as (url, _):
        transport = MultiplexedTransport(max_connections=1)
        timeout = httpx.Timeout(10, pool=0.3)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            busy = [asyncio.create_task(count_lines(client, url, n=20, rate=10)) for _ in range(2)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            with pytest.raises(errors.PoolTimeout) as info:
                await count_lines(client, url, n=1)
            assert 0.25 < time.monotonic() - started < 1.5
            assert isinstance(info.value, httpx.PoolTimeout)  # stock httpx users catch this
            assert info.value.retryable
            for task in busy:
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)


@pytest.mark.timeout(30)
async def test_idle_connection_is_closed_after_keepalive_expiry_and_reopened() -> None:
    async with hypercorn_server() as (url, _):
        transport = MultiplexedTransport(keepalive_expiry=0.2)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            assert await count_lines(client, url, n=3) == 4
            assert transport.stats().connections == 1
            await asyncio.sleep(0.5)
            assert transport.stats().connections == 0
            assert await count_lines(client, url, n=3) == 4
            assert transport.stats().connections_opened == 2


@pytest.mark.timeout(30)
async def test_one_stalled_stream_is_detected_while_50_others_keep_flowing() -> None:
    # Stock httpcore: any frame on any stream resets the shared read timeout, so the
    # stalled stream is never detected while the others flow.
    async with hypercorn_server() as (url, _):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(10, read=0.5)
        ) as client:
            flowing = [count_lines(client, url, n=30, rate=20) for _ in range(50)]
            started = time.monotonic()

            async def stalled() -> float:
                with pytest.raises(errors.StallError) as info:
                    await count_lines(client, url, n=30, rate=20, stall_after=2)
                assert isinstance(info.value, httpx.ReadTimeout)
                return time.monotonic() - started

            stall_at, *others = await asyncio.gather(stalled(), *flowing)
            assert 0.5 <= stall_at < 1.3, stall_at  # detected while the others still flow
            assert others == [31] * 50
            assert time.monotonic() - started > stall_at + 0.1
            assert transport.stats().streams_active == 0


@pytest.mark.timeout(30)
async def test_consumer_that_stops_reading_does_not_slow_other_streams() -> None:
    # Stock httpcore opens every stream window to 16 MiB and credits the connection
    # window only as each stream is read: the unread 40 MB response uses up the 16 MiB
    # connection window and the 20 other streams stop (with httpx 0.28.1, http1=False,
    # they failed with ReadTimeout). Here the stalled stream holds at most its 64 KiB
    # window while the others keep their pace.
    window = 65_536
    async with hypercorn_server() as (url, _):
        transport = MultiplexedTransport(initial_stream_window=window)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            async with client.stream("GET", url + "/blob?size=40000000") as slow:
                first = await slow.aiter_raw().__anext__()
                assert first
                # This consumer now stops reading; the server has 40 MB to send.
                await asyncio.sleep(0.3)
                started = time.monotonic()
                results = await asyncio.gather(
                    *(count_lines(client, url, n=10, rate=10) for _ in range(20))
                )
                elapsed = time.monotonic() - started
                assert results == [11] * 20
                assert elapsed < 2.0, elapsed
                # Memory held for the stalled stream is bounded by its window.
                buffered = transport.stats().buffered_bytes
                assert 0 < buffered <= window
            assert transport.stats().streams_active == 0


@pytest.mark.timeout(60)
async def test_large_bodies_with_content_length_flow_through_small_windows() -> None:
    # 3 x 8 MiB over one connection with 64 KiB stream windows and a 1 MiB connection
    # window: hundreds of WINDOW_UPDATEs, h2's content-length check at END_STREAM.
    size = 8 * 1024 * 1024
    pattern = bytes(range(256)) * 256
    async with hypercorn_server() as (url, _):
        transport = MultiplexedTransport(initial_stream_window=65_536, connection_window=1 << 20)
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:

            async def fetch() -> bytes:
                r = await client.get(url + f"/blob?size={size}")
                assert r.headers["content-length"] == str(size)
                return r.content

            bodies = await asyncio.gather(fetch(), fetch(), fetch())
            for body in bodies:
                assert len(body) == size
                assert body[: len(pattern)] == pattern and body[-256:] == bytes(range(256))
            assert transport.stats().connections_opened == 1


@pytest.mark.timeout(30)
async def test_client_stream_cap_below_the_server_limit_spreads_streams() -> None:
    async with hypercorn_server(max_concurrent_streams=100) as (url, stats):
        transport = MultiplexedTransport(max_streams_per_connection=5)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            results = await asyncio.gather(
                *(count_lines(client, url, n=5, rate=10) for _ in range(20))
            )
            assert results == [6] * 20
            assert stats.max_active == 20
            assert transport.stats().connections_opened == 4
