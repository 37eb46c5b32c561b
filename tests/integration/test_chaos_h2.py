"""HTTP/2 toxics through the real proxy: hypercorn (h2c) upstream, stock httpx / h2 clients."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from resilient_stream.chaos import ChaosProxy

LINES = 30


def line(i: int, k: str) -> bytes:
    return json.dumps({"i": i, "k": k, "response": f"token {i}"}).encode() + b"\n"


def body(n: int, k: str) -> bytes:
    return b"".join(line(i, k) for i in range(n)) + b'{"done":true}\n'


async def ndjson_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Streams ``n`` NDJSON lines, one per body message, ``gap`` seconds apart."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
    n, k, gap = int(query.get("n", LINES)), query.get("k", ""), float(query.get("gap", 0.002))
    headers = [(b"content-type", b"application/x-ndjson")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(n):
        await send({"type": "http.response.body", "body": line(i, k), "more_body": True})
        await asyncio.sleep(gap)
    await send({"type": "http.response.body", "body": b'{"done":true}\n', "more_body": False})


@asynccontextmanager
async def hypercorn_server() -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = None
    # Streams cut by a toxic leave hypercorn waiting on them at shutdown: don't wait long.
    config.graceful_timeout = 0.2
    stop = asyncio.Event()
    task = asyncio.create_task(serve(ndjson_app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        for _ in range(200):  # until it accepts
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        sock.detach()  # hypercorn owned (and closed) the file descriptor


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with hypercorn_server() as addr:
        yield addr


def h2_client(proxy: ChaosProxy) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http2=True, http1=False, base_url=proxy.url, timeout=httpx.Timeout(5.0)
    )


async def fetch(client: httpx.AsyncClient, k: str, n: int = LINES) -> tuple[str, bytes]:
    """('ok' | exception class name, bytes received)."""
    got = b""
    try:
        async with client.stream("GET", f"/stream?n={n}&k={k}") as response:
            async for chunk in response.aiter_bytes():
                got += chunk
        return "ok", got
    except httpx.HTTPError as exc:
        return type(exc).__name__, got


@pytest.mark.timeout(20)
async def test_proxy_passes_http2_streams_through_unchanged(upstream: str) -> None:
    async with ChaosProxy(upstream) as proxy, h2_client(proxy) as client:
        results = await asyncio.gather(*(fetch(client, str(k)) for k in range(4)))
        assert results == [("ok", body(LINES, str(k))) for k in range(4)]
        assert proxy.connections_accepted == 1


@pytest.mark.timeout(20)
async def test_reset_stream_fails_exactly_one_stream_and_the_others_complete(
    upstream: str,
) -> None:
    spec = "reset_stream:max_streams=1,min_bytes=100,max_bytes=400"
    async with ChaosProxy(upstream, [spec], seed=7) as proxy, h2_client(proxy) as client:
        results = await asyncio.gather(*(fetch(client, str(k)) for k in range(5)))
        failed = [k for k, (status, _) in enumerate(results) if status != "ok"]
        assert len(failed) == 1
        for k, (status, got) in enumerate(results):
            if k in failed:
                assert status == "RemoteProtocolError"
                assert body(LINES, str(k)).startswith(got) and len(got) < len(body(LINES, str(k)))
            else:
                assert got == body(LINES, str(k))
        # The connection stayed healthy: a new stream on it completes.
        assert await fetch(client, "after") == ("ok", body(LINES, "after"))
        assert proxy.connections_accepted == 1
        (fault,) = proxy.faults
        assert fault.kind == "reset_stream" and fault.stream_id == 2 * failed[0] + 1
        assert 100 <= fault.offset <= 400


@pytest.mark.timeout(30)
async def test_same_seed_and_traffic_give_the_same_fault_plan(upstream: str) -> None:
    async def run(seed: int) -> list[tuple[str, str, str, str, int, str]]:
        spec = "reset_stream:probability=0.5,min_bytes=0,max_bytes=600"
        async with ChaosProxy(upstream, [spec], seed=seed) as proxy, h2_client(proxy) as client:
            results = await asyncio.gather(*(fetch(client, str(k)) for k in range(6)))
            hit = {f.stream_id for f in proxy.faults}
            assert {2 * k + 1 for k, (s, _) in enumerate(results) if s != "ok"} == hit
            return proxy.fault_plan()

    first = await run(7)
    assert first  # something was injected
    assert await run(7) == first


@pytest.mark.timeout(20)
async def test_stall_stream_stalls_one_stream_while_others_flow(upstream: str) -> None:
    spec = "stall_stream:stream_id=1,min_bytes=50,max_bytes=50,duration=400"
    async with ChaosProxy(upstream, [spec]) as proxy, h2_client(proxy) as client:
        results = await asyncio.gather(*(fetch(client, str(k)) for k in range(4)))
        status, got = results[0]
        assert status == "RemoteProtocolError"  # reset after the stall's duration
        assert len(got) <= 50
        assert results[1:] == [("ok", body(LINES, str(k))) for k in range(1, 4)]
        assert await fetch(client, "after") == ("ok", body(LINES, "after"))
        assert proxy.connections_accepted == 1
        assert [(f.kind, f.stream_id) for f in proxy.faults] == [("stall_stream", 1)]


@pytest.mark.timeout(20)
async def test_stall_stream_without_duration_hits_the_clients_read_timeout(upstream: str) -> None:
    spec = "stall_stream:stream_id=1,min_bytes=0,max_bytes=0"
    async with (
        ChaosProxy(upstream, [spec]) as proxy,
        httpx.AsyncClient(
            http2=True, http1=False, base_url=proxy.url, timeout=httpx.Timeout(5.0, read=0.5)
        ) as client,
    ):
        stalled, other = await asyncio.gather(fetch(client, "s"), fetch(client, "o"))
        assert stalled == ("ReadTimeout", b"")
        assert other == ("ok", body(LINES, "o"))


class RawH2:
    """A bare h2 client over asyncio streams, to see frames the way the peer gets them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.data: dict[int, bytes] = {}
        self.events: list[h2.events.Event] = []

    def request(self, path: str) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
        self.conn.send_headers(sid, headers, end_stream=True)
        self.data[sid] = b""
        return sid

    async def run(self, until: int | None = None, seconds: float = 5.0) -> None:
        """Pump until the connection closes or stream ``until`` ends (or ``seconds`` pass)."""
        async with asyncio.timeout(seconds):
            while not any(
                isinstance(e, h2.events.StreamEnded) and e.stream_id == until for e in self.events
            ):
                self.writer.write(self.conn.data_to_send())
                await self.writer.drain()
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                try:
                    events = self.conn.receive_data(chunk)
                except h2.exceptions.ProtocolError:
                    return
                for ev in events:
                    self.events.append(ev)
                    if isinstance(ev, h2.events.DataReceived):
                        self.data[ev.stream_id] += ev.data
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)


@asynccontextmanager
async def raw_client(proxy: ChaosProxy) -> AsyncIterator[RawH2]:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        yield RawH2(reader, writer)
    finally:
        writer.close()


@pytest.mark.timeout(20)
async def test_goaway_sends_goaway_with_the_chosen_last_stream_id_then_closes(
    upstream: str,
) -> None:
    async with ChaosProxy(upstream, ["goaway:frames=6,last_stream_id=3"]) as proxy:
        async with raw_client(proxy) as client:
            for k in range(3):
                client.request(f"/s?n={LINES}&k={k}")
            await client.run()
        goaways = [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
        assert [(g.last_stream_id, g.error_code) for g in goaways] == [(3, 0)]
        assert not any(isinstance(e, h2.events.StreamEnded) for e in client.events)
        (fault,) = proxy.faults
        assert (fault.kind, fault.offset, fault.detail) == (
            "goaway",
            6,
            "frames=6 last_stream_id=3",
        )


@pytest.mark.timeout(20)
async def test_cut_data_delivers_half_a_line_then_drops_the_connection(upstream: str) -> None:
    async with ChaosProxy(upstream, ["cut_data:min_bytes=70,max_bytes=70"]) as proxy:
        async with h2_client(proxy) as client:
            status, got = await fetch(client, "c")
        assert status == "RemoteProtocolError"
        assert got == body(LINES, "c")[:70]
        assert not got.endswith(b"\n")  # mid-line
        assert proxy.faults[0].kind == "cut_data"


@pytest.mark.timeout(20)
async def test_drop_after_data_frames_drops_the_connection_after_n_frames(upstream: str) -> None:
    async with ChaosProxy(upstream, ["drop_after_data_frames:frames=5"]) as proxy:
        async with raw_client(proxy) as client:
            sid = client.request(f"/s?n={LINES}&k=d")
            await client.run()
        frames = [e for e in client.events if isinstance(e, h2.events.DataReceived)]
        assert len(frames) == 5
        assert client.data[sid] == b"".join(line(i, "d") for i in range(5))
        assert proxy.faults[0].kind == "drop_after_data_frames"


@pytest.mark.timeout(20)
async def test_http1_traffic_passes_through_http2_toxics_untouched(upstream: str) -> None:
    async with ChaosProxy(upstream, ["reset_stream:min_bytes=0,max_bytes=0"]) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            response = await client.get("/s?n=5&k=h1")
        assert response.content == body(5, "h1")
        assert proxy.faults == []


@pytest.mark.timeout(20)
async def test_reset_stream_against_the_reference_server() -> None:
    from resilient_stream.refserver import ReferenceServer

    request = {"model": "m", "prompt": "hello", "options": {"num_predict": 40}}
    async with ReferenceServer(port=0, stop_probability=0.0) as srv:
        upstream = f"127.0.0.1:{srv.port}"
        spec = "reset_stream:max_streams=1,min_bytes=200,max_bytes=200"
        async with ChaosProxy(upstream, [spec]) as proxy, h2_client(proxy) as client:

            async def one() -> str:
                try:
                    async with client.stream("POST", "/api/generate", json=request) as r:
                        async for _ in r.aiter_lines():
                            pass
                    return "ok"
                except httpx.RemoteProtocolError:
                    return "reset"

            results = await asyncio.gather(*(one() for _ in range(4)))
            assert sorted(results) == ["ok", "ok", "ok", "reset"]
            assert proxy.connections_accepted == 1


@pytest.mark.timeout(20)
async def test_stalled_streams_dropped_data_is_credited_so_other_streams_keep_flowing(
    upstream: str,
) -> None:
    # The bare h2 client keeps the default 65,535-byte connection window. The
    # stalled stream alone would use all of it up; only the proxy's
    # WINDOW_UPDATE for the data it drops lets the other stream finish.
    spec = "stall_stream:stream_id=1,min_bytes=0,max_bytes=0"
    async with ChaosProxy(upstream, [spec]) as proxy, raw_client(proxy) as client:
        client.request("/s?n=2000&k=big&gap=0")
        with pytest.raises(TimeoutError):  # the big stream runs into its window first
            await client.run(seconds=0.5)
        sid = client.request("/s?n=20&k=small")
        await client.run(until=sid)
        assert client.data[sid] == body(20, "small")
        assert client.data[1] == b""
        sid = client.request("/s?n=5&k=after")
        await client.run(until=sid)
        assert client.data[sid] == body(5, "after")
