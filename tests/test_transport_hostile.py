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
import json
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpx
import pytest

from resilient_stream import StreamClient, StreamConfig, errors
from resilient_stream.transport import MultiplexedTransport
from resilient_stream.transport.h2setup import server_preface_verdict
from resilient_stream.transport.multiplexed import MAX_TRANSPARENT_RETRIES

BODY = {"model": "m", "prompt": "x", "stream": True}
LINES = [
    json.dumps({"model": "m", "response": f"t{i} ", "done": False}).encode() + b"\n"
    for i in range(3)
] + [b'{"model": "m", "response": "", "done": true, "done_reason": "stop"}\n']
ENHANCE_YOUR_CALM = int(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)


@dataclass
class Seen:
    """What a hostile server saw."""

    connections: int = 0
    requests: int = 0
    served: int = 0
    pings_sent: int = 0
    ping_acks: int = 0
    bdp_pings: int = 0
    goaway_codes: list[int] = field(default_factory=list)


def _server_conn() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )


def _serve(conn: h2.connection.H2Connection, sid: int) -> None:
    conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/x-ndjson")])
    conn.send_data(sid, b"".join(LINES), end_stream=True)


@contextlib.asynccontextmanager
async def h2_server(
    on_connect: Callable[[h2.connection.H2Connection, Seen], bytes] | None = None,
    on_request: Callable[[h2.connection.H2Connection, int, Seen], bytes] | None = None,
) -> AsyncIterator[tuple[str, Seen]]:
    """An h2c server on 127.0.0.1:0. ``on_connect`` may add raw bytes after the server's
    SETTINGS; ``on_request`` answers a request (default: serve :data:`LINES`) and may
    return raw bytes to write after whatever h2 queued."""
    seen = Seen()
    writers: list[asyncio.StreamWriter] = []
    handlers: set[asyncio.Task[object]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        conn = _server_conn()
        conn.initiate_connection()
        extra = on_connect(conn, seen) if on_connect else b""
        writer.write(conn.data_to_send() + extra)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                raw = b""
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        seen.requests += 1
                        if on_request is None:
                            _serve(conn, event.stream_id)
                            seen.served += 1
                        else:
                            raw += on_request(conn, event.stream_id, seen)
                    elif isinstance(event, h2.events.DataReceived):
                        with contextlib.suppress(h2.exceptions.ProtocolError):
                            conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                    elif isinstance(event, h2.events.PingAckReceived):
                        seen.ping_acks += 1
                    elif isinstance(event, h2.events.PingReceived):
                        if event.ping_data.startswith(b"rs-bdp"):
                            seen.bdp_pings += 1
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        seen.goaway_codes.append(int(event.error_code or 0))
                writer.write(conn.data_to_send() + raw)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        for w in writers:
            w.close()
        if handlers:
            await asyncio.wait(handlers, timeout=5)
        await server.wait_closed()


def goaway_frame(last_stream_id: int, error_code: int = 0) -> bytes:
    """GOAWAY written by hand: h2 refuses to send anything after its own (h2#1181)."""
    return struct.pack(">BHBBLLL", 0, 8, 7, 0, 0, last_stream_id, error_code)


def ping_frame(data: bytes = b"hostile!", ack: bool = False) -> bytes:
    return struct.pack(">BHBBL", 0, 8, 6, 1 if ack else 0, 0) + data


#: A storming client is stopped by the server after this many refusals (it then serves).
STORM_CAP = 300


def refuse_forever(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
    """RST_STREAM(REFUSED_STREAM) for every request (up to STORM_CAP, then serve)."""
    if seen.requests > STORM_CAP:
        _serve(conn, sid)
        seen.served += 1
    else:
        conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
    return b""


def goaway_on_connect(conn: h2.connection.H2Connection, seen: Seen) -> bytes:
    """A draining server: GOAWAY(NO_ERROR, last_stream_id=0) right after its SETTINGS."""
    return goaway_frame(0) if seen.connections <= STORM_CAP else b""


def goaway_on_request(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
    """A draining server: the first request of each connection gets GOAWAY(last=0)."""
    if seen.connections > STORM_CAP:
        _serve(conn, sid)
        seen.served += 1
        return b""
    return goaway_frame(0)


# --- item 2: transparent retries are bounded ------------------------------------------


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
