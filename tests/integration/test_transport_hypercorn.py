"""MultiplexedTransport against hypercorn (a third-party HTTP/2 server), real sockets.

Each test pins down one place where the stock httpx/httpcore HTTP/2 path fails
(see DESIGN.md, "What the stock httpx/httpcore HTTP/2 path gets wrong").
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from support.transport_servers import count_lines, hypercorn_server

from resilient_stream import errors
from resilient_stream.transport import MultiplexedTransport, TransportStats


@pytest.mark.timeout(30)
async def test_streams_above_max_concurrent_streams_open_more_connections() -> None:
    # Stock httpcore queues streams 101..300 on the one connection until earlier ones end.
    # Here the server holds every stream open after its first line (stall_after=1) until
    # the client leaves, and the client leaves only once all 300 have that line: a pool
    # that queued above the server's limit would never get there (asyncio.timeout).
    async with hypercorn_server(max_concurrent_streams=100) as (url, stats):
        transport = MultiplexedTransport(max_connections=10)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            await count_lines(client, url, n=1)  # warm: learn the server's limit
            all_open = asyncio.Barrier(301)  # 300 streams + the snapshot below
            release = asyncio.Event()

            async def held_open() -> int:
                body = {"n": 10, "stall_after": 1}
                async with client.stream("POST", url + "/gen", json=body) as r:
                    assert r.http_version == "HTTP/2"
                    first = await r.aiter_raw().__anext__()
                    await all_open.wait()
                    await release.wait()
                return first.count(b"\n")  # leaving resets the stream

            async def snapshot() -> TransportStats:
                await all_open.wait()
                now = transport.stats()
                release.set()
                return now

            async with asyncio.timeout(20):
                at_peak, *results = await asyncio.gather(
                    snapshot(), *(held_open() for _ in range(300))
                )
            assert results == [1] * 300
            assert stats.max_active == 300  # the server's own count: all 300 at once
            assert at_peak.streams_active == 300 and at_peak.connections == 3
            for _ in range(500):  # the 300 RST_STREAMs reach the server
                if stats.active == 0:
                    break
                await asyncio.sleep(0.01)
            assert stats.active == 0 and stats.disconnected == 300
            assert (transport.stats().connections, transport.stats().connections_opened) == (3, 3)


@pytest.mark.timeout(30)
async def test_pool_timeout_when_every_connection_is_full_is_typed() -> None:
    async with hypercorn_server(max_concurrent_streams=2) as (url, stats):
        transport = MultiplexedTransport(max_connections=1)
        timeout = httpx.Timeout(10, pool=0.3)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            # 100 tokens at 10/s: the two slots stay busy far longer than the pool timeout.
            busy = [asyncio.create_task(count_lines(client, url, n=100, rate=10)) for _ in range(2)]
            for _ in range(1000):  # until both slots are taken (at most 10 s)
                if stats.active == 2:
                    break
                await asyncio.sleep(0.01)
            assert stats.active == 2
            started = time.monotonic()
            with pytest.raises(errors.PoolTimeout) as info:
                await count_lines(client, url, n=1)
            assert time.monotonic() - started >= 0.25  # it waited for a slot first
            # It gave up while every slot was still held: the pool timeout, not a freed slot.
            assert not any(task.done() for task in busy) and stats.completed == 0
            snapshot = transport.stats()
            assert (snapshot.connections_opened, snapshot.streams_active) == (1, 2)
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
    async with hypercorn_server() as (url, stats):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(10, read=0.5)
        ) as client:
            # 60 tokens at 20/s: the others flow for 3 s, the stall is due after ~0.6 s.
            flowing = [count_lines(client, url, n=60, rate=20) for _ in range(50)]

            async def stalled() -> tuple[int, int]:
                with pytest.raises(errors.StallError) as info:
                    await count_lines(client, url, n=60, rate=20, stall_after=2)
                assert isinstance(info.value, httpx.ReadTimeout)
                assert info.value.waited == 0.5  # this request's per-stream read timeout
                assert "per-stream idle timeout" in str(info.value)
                return stats.completed, stats.tokens  # where the others were at that moment

            (completed_then, tokens_then), *others = await asyncio.gather(stalled(), *flowing)
            # Caught while the other 50 were still flowing: none had finished, and they
            # sent more tokens afterwards (a shared read timeout would wait for their end).
            assert completed_then == 0
            assert others == [61] * 50
            assert stats.completed == 50 and stats.tokens > tokens_then
            assert transport.stats().streams_active == 0


@pytest.mark.timeout(30)
async def test_consumer_that_stops_reading_does_not_slow_other_streams() -> None:
    # Stock httpcore opens every stream window to 16 MiB and credits the connection
    # window only as each stream is read: the unread 40 MB response uses up the 16 MiB
    # connection window and the 20 other streams stop (with httpx 0.28.1, http1=False,
    # they failed with ReadTimeout). Here the stalled stream holds at most its 64 KiB
    # window while the others keep their pace.
    window = 65_536
    async with hypercorn_server() as (url, stats):
        transport = MultiplexedTransport(initial_stream_window=window)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            async with client.stream("GET", url + "/blob?size=40000000") as slow:
                first = await slow.aiter_raw().__anext__()
                assert first
                # This consumer now stops reading; the server has 40 MB to send.
                await asyncio.sleep(0.3)
                results = await asyncio.gather(
                    *(count_lines(client, url, n=10, rate=10) for _ in range(20))
                )
                # Each got every line (starved streams end in StallError at the 10 s read
                # timeout), all 20 at once, on the stalled stream's own connection.
                assert results == [11] * 20
                assert stats.max_active == 20
                assert transport.stats().connections_opened == 1
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
