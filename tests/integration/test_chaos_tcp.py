"""TCP toxics through the real proxy on loopback sockets (echo / close servers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from resilient_stream.chaos import ChaosProxy

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def reply_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(100)
    writer.write(b"bye")
    await writer.drain()
    writer.close()


@asynccontextmanager
async def server(handler: Handler = echo) -> AsyncIterator[str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()
        await srv.wait_closed()


@asynccontextmanager
async def proxied(
    *toxics: str, handler: Handler = echo, seed: int = 0
) -> AsyncIterator[tuple[ChaosProxy, asyncio.StreamReader, asyncio.StreamWriter]]:
    async with server(handler) as upstream, ChaosProxy(upstream, toxics, seed=seed) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        try:
            yield proxy, reader, writer
        finally:
            writer.close()


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    start = time.perf_counter()
    writer.write(b"ping")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    return time.perf_counter() - start


@pytest.mark.timeout(10)
async def test_proxy_without_toxics_echoes_bytes_unchanged() -> None:
    async with proxied() as (proxy, reader, writer):
        payload = bytes(range(256)) * 4096  # 1 MiB
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
        assert got == payload
        assert proxy.faults == []
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"


@pytest.mark.timeout(10)
async def test_latency_delays_the_round_trip() -> None:
    async with proxied("latency:downstream:latency=80") as (proxy, reader, writer):
        assert await round_trip(reader, writer) >= 0.079
        assert [f.kind for f in proxy.faults] == ["latency"]


@pytest.mark.timeout(10)
async def test_latency_added_and_removed_on_a_live_connection() -> None:
    async with proxied() as (proxy, reader, writer):
        await round_trip(reader, writer)
        (conn,) = proxy._conns  # the one live connection
        assert conn.core.passthrough  # no toxic on it yet
        proxy.add_toxic("latency:upstream:latency=300")
        assert not conn.core.passthrough  # the toxic joined the live connection
        assert await round_trip(reader, writer) >= 0.299
        proxy.remove_toxic("latency_upstream")
        assert conn.core.passthrough  # ... and left it: bytes skip the pipeline again
        await round_trip(reader, writer)  # still relays (round_trip checks the echo)
        assert [f.kind for f in proxy.faults] == ["latency"]


@pytest.mark.timeout(10)
async def test_bandwidth_limits_throughput() -> None:
    async with proxied("bandwidth:rate=100") as (_, reader, writer):  # 100 KB/s
        start = time.perf_counter()
        writer.write(b"b" * 30_000)
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(30_000), 5)
        assert time.perf_counter() - start >= 0.29


@pytest.mark.timeout(10)
async def test_slow_close_delays_the_eof_seen_by_the_client() -> None:
    async with proxied("slow_close:delay=300", handler=reply_and_close) as (_, reader, writer):
        writer.write(b"hi")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"bye"
        start = time.perf_counter()
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        assert time.perf_counter() - start >= 0.25


@pytest.mark.timeout(10)
async def test_timeout_swallows_data_then_closes() -> None:
    async with proxied("timeout:timeout=300") as (_, reader, writer):
        start = time.perf_counter()
        writer.write(b"anyone?")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        assert time.perf_counter() - start >= 0.25


@pytest.mark.timeout(10)
async def test_timeout_zero_holds_the_connection_silent() -> None:
    async with proxied("timeout:timeout=0") as (proxy, reader, writer):
        writer.write(b"anyone?")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(10), 0.3)
        proxy.remove_toxic("timeout_downstream")
        await round_trip(reader, writer)  # relays again (round_trip checks the echo)


@pytest.mark.timeout(10)
async def test_reset_peer_resets_the_client_connection() -> None:
    async with proxied("reset_peer:timeout=50") as (proxy, reader, writer):
        writer.write(b"data")
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(10), 5)
        assert [f.kind for f in proxy.faults] == ["reset_peer"]


@pytest.mark.timeout(10)
async def test_slicer_delivers_many_small_reads() -> None:
    async with proxied("slicer:average_size=20,size_variation=5,delay=2000") as (_, reader, writer):
        payload = bytes(range(200)) * 5
        writer.write(payload)
        await writer.drain()
        got = b""
        reads = 0
        while len(got) < len(payload) and reads < 1000:
            got += await asyncio.wait_for(reader.read(65536), 5)
            reads += 1
        assert got == payload
        assert reads >= 10


@pytest.mark.timeout(10)
async def test_limit_data_closes_after_the_limit() -> None:
    async with proxied("limit_data:bytes=1000") as (proxy, reader, writer):
        writer.write(b"L" * 5000)
        await writer.drain()
        got = b""
        for _ in range(100):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            got += chunk
        assert got == b"L" * 1000
        assert proxy.faults[0].offset == 1000


@pytest.mark.timeout(10)
async def test_toxicity_decides_per_connection_and_replays_with_the_seed() -> None:
    async def plan(seed: int) -> list[int]:
        async with (
            server() as upstream,
            ChaosProxy(upstream, ["limit_data:bytes=1,toxicity=0.5"], seed=seed) as proxy,
        ):
            for _ in range(12):
                reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
                writer.write(b"xy")
                await writer.drain()
                await asyncio.wait_for(reader.read(10), 5)
                writer.close()
            return [f.connection for f in proxy.faults]

    first = await plan(5)
    assert first == await plan(5)
    assert 0 < len(first) < 12


@pytest.mark.timeout(10)
async def test_unreachable_upstream_closes_the_client_connection() -> None:
    async with server() as upstream:
        pass  # now closed: nothing listens there
    async with ChaosProxy(upstream) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()


@pytest.mark.timeout(10)
async def test_disable_drops_connections_and_enable_listens_again() -> None:
    async with proxied() as (proxy, reader, _):
        await proxy.disable()
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        with pytest.raises(OSError):
            await asyncio.open_connection(proxy.host, proxy.port)
        await proxy.enable()
        r2, w2 = await asyncio.open_connection(proxy.host, proxy.port)
        await round_trip(r2, w2)  # relays again (round_trip checks the echo)
        w2.close()


@pytest.mark.timeout(10)
async def test_updating_a_toxic_changes_open_connections() -> None:
    async with proxied("latency:downstream:latency=10") as (proxy, reader, writer):
        assert await round_trip(reader, writer) >= 0.009
        proxy.update_toxic("latency_downstream", attributes={"latency": 300})
        assert await round_trip(reader, writer) >= 0.299
        assert proxy.get_toxic("latency_downstream").attributes == {"latency": 300, "jitter": 0}
