"""Adaptive windows at the transport's I/O edge: real sockets, hypercorn, the chaos proxy."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from support.transport_servers import count_lines, hypercorn_server

from resilient_stream.chaos import ChaosProxy
from resilient_stream.transport import MultiplexedTransport
from resilient_stream.transport import stream as transport_stream
from resilient_stream.transport.windows import ReceiveWindow

KIB = 1024


async def fetch_blob(client: httpx.AsyncClient, url: str, size: int) -> int:
    received = 0
    async with client.stream("GET", url + f"/blob?size={size}") as response:
        assert response.status_code == 200
        async for data in response.aiter_raw():
            received += len(data)
    return received


@pytest.mark.timeout(30)
async def test_stream_window_grows_past_window_over_rtt_on_a_link_with_latency() -> None:
    # 50 ms of downstream latency: a fixed 64 KiB window caps a stream at 64 KiB / 50 ms
    # = 1.3 MB/s. The BDP probes measure the round trip and the stream's window follows
    # what its consumer reads, so the same transfer runs well above that ceiling.
    rtt = 0.05
    floor = 64 * KIB
    size = 12_000_000
    async with (
        hypercorn_server() as (url, _),
        ChaosProxy(url.removeprefix("http://"), ["latency:downstream:latency=50"]) as proxy,
    ):
        transport = MultiplexedTransport(initial_stream_window=floor, stream_window_floor=floor)
        async with httpx.AsyncClient(transport=transport, timeout=20) as client:
            peak_window = 0

            async def watch() -> None:
                nonlocal peak_window
                for _ in range(2000):  # bounded: 20 s at most
                    peak_window = max(peak_window, transport.stats().stream_window_max)
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            assert await fetch_blob(client, proxy.url, size) == size
            watcher.cancel()
            stats = transport.stats()
            # A new stream on this connection starts from the measured BDP, not 64 KiB.
            async with client.stream("POST", proxy.url + "/gen", json={"n": 3, "rate": 10}) as r:
                assert r.status_code == 200
                now = transport.stats()
                assert now.stream_window_max == min(max(now.bdp_max, floor), 16 * 1024 * KIB)
                assert now.stream_window_max > floor
                await r.aread()
        # The window, not the throughput: a fixed window stays at 64 KiB, which caps a
        # stream at 64 KiB per round trip (the throughput itself is measured by
        # bench/bench_buffering.py, "link"). A busy machine only lengthens the measured
        # round trip, so it has a lower bound only.
        assert peak_window >= 8 * floor, peak_window
        assert stats.rtt >= 0.8 * rtt, stats.rtt
        assert stats.bdp_max > floor


@pytest.mark.timeout(30)
async def test_a_stopped_consumer_holds_at_most_its_window_while_the_others_complete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One bulk stream's window grows on a 20 ms link, then its consumer stops reading.
    # Its stream window is no longer replenished (the server stops sending on it), the
    # connection window is, so 20 paced streams on the same connection finish normally.
    #
    # The bound is not the window at one moment: a shrink (its consumer slowed down, as
    # on a busy machine) cannot take back credit already granted (windows.py withholds
    # later increments instead), so the server may still fill a larger window the stream
    # had before. Its window records the credit it granted and the largest size it took
    # (one read can grow it and cut it again, between any two samples).
    windows: list[RecordingWindow] = []

    class RecordingWindow(ReceiveWindow):
        __slots__ = ("granted", "largest")

        def __init__(self, size: int) -> None:
            super().__init__(size)
            self.largest = self.granted = size  # SETTINGS_INITIAL_WINDOW_SIZE
            windows.append(self)

        def consumed(self, n: int) -> int:
            increment = super().consumed(n)
            self.granted += increment
            return increment

        def flush(self) -> int:
            increment = super().flush()
            self.granted += increment
            return increment

        def resize(self, new_size: int) -> int:
            increment = super().resize(new_size)
            self.granted += increment
            self.largest = max(self.largest, new_size)
            return increment

    monkeypatch.setattr(transport_stream, "ReceiveWindow", RecordingWindow)
    async with (
        hypercorn_server() as (url, _),
        ChaosProxy(url.removeprefix("http://"), ["latency:downstream:latency=20"]) as proxy,
    ):
        transport = MultiplexedTransport(stream_window_floor=64 * KIB)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            async with client.stream("GET", proxy.url + "/blob?size=200000000") as bulk:
                (window,) = windows  # the bulk stream's
                reader = bulk.aiter_raw()
                read = 0
                deadline = time.monotonic() + 0.8
                # Read at full speed for 0.8 s, and on until the window grew (a busy
                # machine reads less in 0.8 s; the 200 MB body bounds the loop).
                while (
                    time.monotonic() < deadline or transport.stats().stream_window_max <= 64 * KIB
                ):
                    read += len(await reader.__anext__())
                grown = transport.stats().stream_window_max
                assert grown > 64 * KIB
                # The consumer stops here.
                results = await asyncio.gather(
                    *(count_lines(client, proxy.url, n=10, rate=20) for _ in range(20))
                )
                assert results == [11] * 20  # the others completed while one was stopped
                stats = transport.stats()
                assert stats.connections == 1
                assert stats.streams_active == 1  # the stopped stream did not run to its end
                held = stats.buffered_bytes
                # Memory held for the stopped stream: at most the credit its window granted
                # beyond what was read (more: the transport sent credit its window did not
                # grant, e.g. for bytes not read), and that at most the largest window it
                # had (more: the window granted beyond its size).
                unread_credit = window.granted - read
                assert 0 < held <= unread_credit <= window.largest, (
                    held,
                    unread_credit,
                    window.largest,
                    window.size,
                )
                assert held <= transport.config.stream_window_cap
            assert transport.stats().streams_active == 0


@pytest.mark.timeout(30)
async def test_fixed_windows_when_adaptive_windows_is_off() -> None:
    async with hypercorn_server() as (url, _):
        transport = MultiplexedTransport(adaptive_windows=False, initial_stream_window=64 * KIB)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            windows = set()
            async with client.stream("GET", url + "/blob?size=4000000") as r:
                async for _ in r.aiter_raw():
                    windows.add(transport.stats().stream_window_max)
            windows.discard(0)  # the last read comes after the stream ended
            assert windows == {64 * KIB}
            assert transport.stats().bdp_max == 0


@pytest.mark.timeout(30)
async def test_without_coalescing_each_data_frame_is_its_own_read() -> None:
    # A consumer that falls behind gets everything waiting as one piece by default;
    # with coalesce_reads=False it gets one DATA frame (<= 16 KiB) per read.
    async with hypercorn_server() as (url, _):
        for coalesce in (True, False):
            transport = MultiplexedTransport(coalesce_reads=coalesce)
            async with httpx.AsyncClient(transport=transport, timeout=10) as client:
                async with client.stream("GET", url + "/blob?size=2000000") as r:
                    reader = r.aiter_raw()
                    first = await reader.__anext__()
                    await asyncio.sleep(0.2)  # fall behind: the window fills up
                    pieces = [len(first)] + [len(d) async for d in reader]
            assert sum(pieces) == 2_000_000
            if coalesce:
                assert max(pieces) > 16 * KIB
            else:
                assert max(pieces) <= 16 * KIB
