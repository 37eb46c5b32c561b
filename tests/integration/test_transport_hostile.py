"""MultiplexedTransport against hostile or odd servers (real sockets on 127.0.0.1).

Each server here is a few lines of raw asyncio + ``h2`` (or the standard library's
``http.server``), written apart from the project's own servers, and counts what it
saw: connections, requests, frames answered. The tests assert those counts, never
wall-clock bounds. Every server has a cap after which it stops misbehaving, so a
client that storms it still finishes (and the count assertion fails clearly).

The servers are also used by test_stream_storms.py (through StreamClient).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpx
import pytest
from support.hostile_h2 import (
    BODY,
    ENHANCE_YOUR_CALM,
    LINES,
    Seen,
    _serve,
    _server_conn,
    goaway_on_connect,
    goaway_on_request,
    h2_server,
    ping_frame,
    refuse_forever,
)

from resilient_stream import StreamClient, StreamConfig, errors
from resilient_stream.transport import MultiplexedTransport
from resilient_stream.transport.flood import BURST, PER_STREAM, RATE, ControlFrameBudget
from resilient_stream.transport.h2setup import server_preface_verdict
from resilient_stream.transport.multiplexed import MAX_TRANSPARENT_RETRIES


@pytest.mark.timeout(60)
async def test_server_refusing_every_stream_gets_a_bounded_number_of_requests() -> None:
    async with h2_server(on_request=refuse_forever) as (url, seen):
        transport = MultiplexedTransport(backoff_initial=0.001, backoff_max=0.005)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            with pytest.raises(errors.RefusedStreamError) as info:
                await client.post(url + "/api/generate", json=BODY)
        # One immediate transparent retry (gRPC), then a few backed-off ones, then the
        # typed error: not 11 (the old bound) and never a storm.
        assert seen.requests == MAX_TRANSPARENT_RETRIES + 1 <= 4
        assert seen.served == 0
        assert "REFUSED_STREAM" in str(info.value)
        assert f"{MAX_TRANSPARENT_RETRIES + 1} times in a row" in str(info.value)


@pytest.mark.timeout(60)
async def test_a_one_off_refused_stream_is_retried_at_once_and_succeeds() -> None:
    def refuse_first(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
        if seen.requests == 1:
            conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        else:
            _serve(conn, sid)
            seen.served += 1
        return b""

    async with h2_server(on_request=refuse_first) as (url, seen):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            r = await client.post(url + "/api/generate", json=BODY)
            assert r.status_code == 200
            assert r.content == b"".join(LINES)
        assert (seen.requests, seen.served, seen.connections) == (2, 1, 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["on_connect", "on_request"])
async def test_server_sending_goaway_on_every_connection_gets_a_bounded_number(
    when: str,
) -> None:
    hooks = (
        {"on_connect": goaway_on_connect}
        if when == "on_connect"
        else {"on_request": goaway_on_request}
    )
    async with h2_server(**hooks) as (url, seen):
        transport = MultiplexedTransport(backoff_initial=0.001, backoff_max=0.005)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            with pytest.raises(errors.GoAwayError) as info:
                await client.post(url + "/api/generate", json=BODY)
        assert seen.connections == MAX_TRANSPARENT_RETRIES + 1 <= 4
        assert seen.served == 0
        assert not info.value.processed
        assert "last_stream_id=0" in str(info.value)
        assert transport.stats().connections == 0


# --- item 4: h2c fallback against servers built on http.server -----------------------


class _Counts:
    prefaces = 0  # h2 connection prefaces seen ("PRI * HTTP/2.0")
    requests = 0  # NDJSON requests served


def _counting(base: type[http.server.BaseHTTPRequestHandler], counts: _Counts) -> type[Any]:
    class Handler(base):  # type: ignore[valid-type,misc]
        def parse_request(self) -> bool:
            if self.raw_requestline.startswith(b"PRI "):
                counts.prefaces += 1
            return bool(super().parse_request())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _NdjsonHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts: _Counts

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"".join(LINES)
        self.send_response(200)
        self.send_header("content-type", "application/x-ndjson")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.counts.requests += 1


@contextlib.contextmanager
def stdlib_server() -> Iterator[tuple[str, _Counts]]:
    """http.server.ThreadingHTTPServer on 127.0.0.1:0 serving LINES to any POST. It
    answers an h2 preface with a bare HTML 505 page: no status line, no headers."""
    counts = _Counts()
    handler = _counting(_NdjsonHandler, counts)
    handler.counts = counts
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def werkzeug_server() -> Iterator[tuple[str, _Counts]]:
    """werkzeug's development server (the Flask dev server, pytest-httpserver)."""
    serving = pytest.importorskip("werkzeug.serving")
    counts = _Counts()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        counts.requests += 1
        start_response("200 OK", [("content-type", "application/x-ndjson")])
        return [b"".join(LINES)]

    handler = _counting(serving.WSGIRequestHandler, counts)
    server = serving.make_server("127.0.0.1", 0, app, threaded=True, request_handler=handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", counts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


SERVERS = {"http.server": stdlib_server, "werkzeug": werkzeug_server}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(SERVERS))
async def test_stdlib_based_server_falls_back_to_http1_at_once_and_for_good(kind: str) -> None:
    with SERVERS[kind]() as (url, counts):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            for _ in range(3):
                r = await client.post(url + "/api/generate", json=BODY)
                assert r.status_code == 200
                assert r.content == b"".join(LINES)
            stats = transport.stats()
    assert counts.prefaces == 1  # one h2 attempt, then HTTP/1.1 for the origin
    assert counts.requests == 3
    assert stats.http1_origins == [url]
    assert stats.connections_opened == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(SERVERS))
async def test_stream_client_with_default_config_succeeds_first_try_on_stdlib_server(
    kind: str,
) -> None:
    with SERVERS[kind]() as (url, counts):
        async with StreamClient(url, config=StreamConfig()) as client:
            result = await client.generate(model="m", prompt="x").collect()
            again = await client.generate(model="m", prompt="y").collect()
    assert result.text == again.text == "t0 t1 t2 "
    assert result.attempts == again.attempts == 1
    assert counts.prefaces == 1
    assert counts.requests == 2


def test_server_preface_verdict_decides_text_from_its_first_byte() -> None:
    settings = _server_conn()
    settings.initiate_connection()
    preface = settings.data_to_send()
    assert server_preface_verdict(preface) is True
    for n in range(9):
        assert server_preface_verdict(preface[:n]) is None  # plausible so far: wait
    for answer in (b"<!DOCTYPE HTML>", b"HTTP/1.1 505 HTTP Version Not Supported", b"\n"):
        assert server_preface_verdict(answer[:1]) is False
    assert server_preface_verdict(ping_frame()) is False  # first frame must be SETTINGS
    settings_ack = struct.pack(">BHBBL", 0, 0, 4, 1, 0)
    assert server_preface_verdict(settings_ack) is False
    on_stream_1 = struct.pack(">BHBBL", 0, 0, 4, 0, 1)
    assert server_preface_verdict(on_stream_1) is False


@pytest.mark.timeout(60)
async def test_h2_server_preface_arriving_byte_by_byte_is_still_h2() -> None:
    # No false fallback: the preface check waits for the whole first frame header.
    served: list[int] = []
    handlers: set[asyncio.Task[object]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        conn = _server_conn()
        conn.initiate_connection()
        for byte in conn.data_to_send():
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        _serve(conn, event.stream_id)
                        served.append(event.stream_id)
                writer.write(conn.data_to_send())
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            r = await client.post(url + "/api/generate", json=BODY)
            assert r.status_code == 200
            assert r.extensions["http_version"] == b"HTTP/2"
            assert transport.stats().http1_origins == []
        assert served == [1]
    finally:
        server.close()
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        await server.wait_closed()


# --- item 10: floods of frames the server sends unasked ------------------------------

FLOOD = 100_000


def flood_on_response(kind: str, n: int = FLOOD, first_only: bool = False) -> Any:
    """Headers, then ``n`` frames of ``kind`` sent unasked, then the body."""

    def hook(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
        if kind == "1xx HEADERS":  # 103 Early Hints, again and again, before the answer
            for _ in range(n):
                conn.send_headers(sid, [(b":status", b"103")])
            _serve(conn, sid)
            return conn.data_to_send()
        conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/x-ndjson")])
        head = conn.data_to_send()
        frames = {
            "PING": ping_frame(),
            "SETTINGS": struct.pack(">BHBBL", 0, 0, 4, 0, 0),
            "empty DATA": struct.pack(">BHBBL", 0, 0, 0, 0, sid),
        }
        flood = frames[kind] * n if not first_only or seen.connections == 1 else b""
        if kind == "PING" and flood:
            seen.pings_sent += n
        conn.send_data(sid, b"".join(LINES), end_stream=True)
        return head + flood + conn.data_to_send()

    return hook


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["PING", "SETTINGS", "empty DATA", "1xx HEADERS"])
async def test_control_frame_flood_is_cut_off_with_enhance_your_calm(kind: str) -> None:
    n = FLOOD if kind != "1xx HEADERS" else 5 * BURST  # h2 encodes each block: fewer
    async with h2_server(on_request=flood_on_response(kind, n)) as (url, seen):
        transport = MultiplexedTransport()
        outcome: BaseException | int
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            try:
                outcome = (await client.post(url + "/api/generate", json=BODY)).status_code
            except httpx.TransportError as exc:
                outcome = exc
            for _ in range(500):  # the server reads the client's GOAWAY (bounded wait)
                if seen.goaway_codes:
                    break
                await asyncio.sleep(0.01)
    answered = seen.ping_acks + seen.settings_acks - 1  # one SETTINGS ACK: the handshake
    # The budget (BURST at once, RATE/s after, PER_STREAM per stream opened); the slack
    # is 10 s of refill, far more than the flood takes.
    assert answered <= BURST + PER_STREAM + 10 * RATE, f"answered {answered} of {FLOOD}"
    assert seen.goaway_codes == [ENHANCE_YOUR_CALM]
    assert isinstance(outcome, errors.FloodError), outcome
    assert isinstance(outcome, errors.ConnectionLostError) and outcome.retryable
    assert "ENHANCE_YOUR_CALM" in str(outcome) and kind in str(outcome)


@pytest.mark.timeout(60)
async def test_a_stream_on_a_flooded_connection_is_retried_on_a_new_one() -> None:
    hook = flood_on_response("PING", first_only=True)
    async with h2_server(on_request=hook) as (url, seen):
        async with StreamClient(url, config=StreamConfig(backoff_initial=0.001)) as client:
            result = await client.generate(model="m", prompt="x").collect()
    assert result.text == "t0 t1 t2 "
    assert result.attempts == 2
    assert seen.connections == 2
    assert seen.goaway_codes[0] == ENHANCE_YOUR_CALM


@pytest.mark.timeout(120)
async def test_keepalive_pings_per_request_pings_and_bdp_acks_never_trip_the_limit() -> None:
    # A normal server: a keepalive PING every 5 ms, and one PING per request it receives
    # (gRPC's BDP estimator pings on the request DATA it gets), over more requests than
    # the burst on one connection; it ACKs the client's own BDP probes (h2 does).
    def ping_then_serve(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
        seen.pings_sent += 1
        head = conn.data_to_send() + ping_frame(b"srv-bdp!")
        _serve(conn, sid)
        seen.served += 1
        return head + conn.data_to_send()

    n = BURST + 300
    async with h2_server(on_request=ping_then_serve, ping_every=0.005) as (url, seen):
        transport = MultiplexedTransport(max_connections=1)
        gate = asyncio.Semaphore(20)

        async def one(client: httpx.AsyncClient) -> bytes:
            async with gate:
                r = await client.post(url + "/api/generate", json=BODY)
                return r.content

        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            bodies = await asyncio.gather(*(one(client) for _ in range(n)))
            # Ask for the last keepalive PINGs' ACKs to arrive (bounded).
            for _ in range(200):
                if seen.ping_acks == seen.pings_sent:
                    break
                await asyncio.sleep(0.01)
            stats = transport.stats()
    assert bodies == [b"".join(LINES)] * n
    assert seen.served == n
    assert stats.connections_opened == 1
    assert seen.goaway_codes == []
    assert seen.pings_sent > BURST
    assert seen.ping_acks >= seen.pings_sent - 1  # all answered (one may be in flight)
    assert seen.bdp_pings >= 1  # the client probed, and the server ACKed its probes


@pytest.mark.timeout(60)
async def test_acks_of_our_pings_are_never_charged() -> None:
    # 3x the burst of PING ACKs (what a server answering BDP probes and keepalives
    # sends) and SETTINGS ACKs: answers, not floods.
    def acks(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
        conn.send_headers(sid, [(b":status", b"200")])
        head = conn.data_to_send()
        flood = (ping_frame(b"rs-bdp\x00\x00", ack=True) + struct.pack(">BHBBL", 0, 0, 4, 1, 0)) * (
            3 * BURST
        )
        conn.send_data(sid, b"".join(LINES), end_stream=True)
        return head + flood + conn.data_to_send()

    async with h2_server(on_request=acks) as (url, seen):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            r = await client.post(url + "/api/generate", json=BODY)
            assert r.content == b"".join(LINES)
            r = await client.post(url + "/api/generate", json=BODY)
            assert r.content == b"".join(LINES)
            assert transport.stats().connections_opened == 1
    assert seen.goaway_codes == []


def test_control_frame_budget_refills_with_time_and_streams() -> None:
    budget = ControlFrameBudget(burst=100, rate=10.0, per_stream=2, now=0.0)
    # A keepalive PING every second for ten hours never trips it.
    assert not any(budget.charge(float(t)) for t in range(36_000))
    # A flood trips it after the burst (plus what the clock refilled meanwhile).
    budget = ControlFrameBudget(burst=100, rate=10.0, per_stream=2, now=0.0)
    tripped = next(i for i in range(10_000) if budget.charge(1e-5 * i))
    assert 100 <= tripped <= 101
    # Opening streams earns a little back, never beyond the burst.
    budget = ControlFrameBudget(burst=100, rate=0.0, per_stream=2, now=0.0)
    for _ in range(1000):
        budget.stream_opened()
    assert budget.allowance == 100
    assert not any(budget.charge(0.0) for _ in range(100))
    budget.stream_opened()
    assert not budget.charge(0.0) and not budget.charge(0.0)
    assert budget.charge(0.0)
