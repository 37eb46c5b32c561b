"""Servers for the transport tests (no tests in here).

* :func:`hypercorn_server`: a small ASGI NDJSON app served by hypercorn (a
  third-party HTTP/2 server) on 127.0.0.1, port 0, speaking h2c with prior
  knowledge and HTTP/1.1 on one port.
* :func:`silent_h2_server`: a raw TCP server that completes the HTTP/2 handshake
  and then never answers anything (not even PING): a dead peer that TCP still
  holds open.
* :func:`h1_only_server`: a plain HTTP/1.1 NDJSON server (h11), like a bare Ollama.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import h11
import httpx
import hyperframe.frame
from hypercorn.asyncio import serve
from hypercorn.config import Config

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class AppStats:
    """What the NDJSON app did, for assertions."""

    active: int = 0
    max_active: int = 0
    tokens: int = 0
    completed: int = 0
    disconnected: int = 0
    protocols: set[str] = field(default_factory=set)


async def blob(scope: Scope, send: Send) -> None:
    """GET /blob?size=N: N bytes (a repeating pattern) with content-length, in 64 KiB sends."""
    size = int(scope["query_string"].decode().split("=")[1])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(size).encode())],
        }
    )
    pattern = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        piece = pattern[: min(len(pattern), size - sent)]
        sent += len(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": sent < size})


def ndjson_app(stats: AppStats) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """POST /gen {"n": tokens, "rate": tokens/s, "stall_after": k|null} -> NDJSON lines."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        stats.protocols.add(scope.get("http_version", "?"))
        if scope["path"] == "/blob":
            await blob(scope, send)
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        req = json.loads(body or b"{}")
        n = int(req.get("n", 10))
        rate = float(req.get("rate", 0))
        stall_after = req.get("stall_after")
        gap = 1.0 / rate if rate > 0 else 0.0
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-ndjson")],
            }
        )
        stats.active += 1
        stats.max_active = max(stats.max_active, stats.active)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            for i in range(n):
                if gone.is_set():
                    stats.disconnected += 1
                    return
                if stall_after is not None and i >= stall_after:
                    await gone.wait()
                    continue
                line = json.dumps({"response": f"t{i} ", "done": False}).encode() + b"\n"
                await send({"type": "http.response.body", "body": line, "more_body": True})
                stats.tokens += 1
                if gap:
                    await asyncio.sleep(gap)
                else:
                    await asyncio.sleep(0)
            await send(
                {
                    "type": "http.response.body",
                    "body": b'{"response": "", "done": true, "done_reason": "length"}\n',
                    "more_body": False,
                }
            )
            stats.completed += 1
        except (asyncio.CancelledError, OSError):
            stats.disconnected += 1
            raise
        finally:
            watcher.cancel()
            stats.active -= 1

    return app


@contextlib.asynccontextmanager
async def hypercorn_server(
    max_concurrent_streams: int = 100, **config: Any
) -> AsyncIterator[tuple[str, AppStats]]:
    """Serve :func:`ndjson_app` with hypercorn on 127.0.0.1:0 (h2c + HTTP/1.1)."""
    stats = AppStats()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    cfg = Config()
    cfg.bind = [f"fd://{sock.fileno()}"]
    cfg.h2_max_concurrent_streams = max_concurrent_streams
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 0.5
    for key, value in config.items():
        setattr(cfg, key, value)
    stop = asyncio.Event()
    _SHUTDOWN[f"http://127.0.0.1:{port}"] = stop
    task = asyncio.create_task(serve(ndjson_app(stats), cfg, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await _wait_listening(port)
        yield f"http://127.0.0.1:{port}", stats
    finally:
        stop.set()
        _SHUTDOWN.pop(f"http://127.0.0.1:{port}", None)
        await asyncio.wait_for(task, 5)  # hypercorn closes the listening socket


_SHUTDOWN: dict[str, asyncio.Event] = {}


def trigger_shutdown(url: str) -> None:
    """Start hypercorn's graceful shutdown (GOAWAY, then finish open streams)."""
    _SHUTDOWN[url].set()


async def _wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError("hypercorn did not start")


@contextlib.asynccontextmanager
async def silent_h2_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Completes the h2 handshake (SETTINGS + ACK) then goes silent, socket open."""
    requests_seen: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        handshaken = False
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if handshaken:
                requests_seen.append(len(data))
                continue  # silent: no responses, no PING ACKs
            conn.receive_data(data)
            writer.write(conn.data_to_send())  # SETTINGS ACK
            handshaken = True

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", requests_seen
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def h1_only_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP/1.1-only NDJSON server (h11). Answers an h2 preface with 400, like Go."""
    first_lines: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError:
                    # Like Go's net/http (Ollama): answer an h2 preface in HTTP/1.1.
                    writer.write(b"HTTP/1.1 505 HTTP Version Not Supported\r\n\r\n")
                    await writer.drain()
                    return
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        return
                    if not first_lines:
                        first_lines.append(data.split(b"\r\n", 1)[0])
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.RemoteProtocolError):
                    return
                if isinstance(event, h11.Request):
                    continue
                if isinstance(event, h11.EndOfMessage):
                    lines = b"".join(
                        json.dumps({"response": f"t{i} ", "done": False}).encode() + b"\n"
                        for i in range(5)
                    )
                    lines += b'{"response": "", "done": true}\n'
                    writer.write(
                        conn.send(
                            h11.Response(
                                status_code=200,
                                headers=[
                                    ("content-type", "application/x-ndjson"),
                                    ("content-length", str(len(lines))),
                                ],
                            )
                        )
                        or b""
                    )
                    writer.write(conn.send(h11.Data(data=lines)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                    conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", first_lines
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def draining_h2_server(
    goaway_after: int, lines: int, rate: float, refuse_first: int = 0
) -> AsyncIterator[tuple[str, list[int]]]:
    """h2c server that sends a graceful GOAWAY(NO_ERROR, last_stream_id=highest) once
    ``goaway_after`` requests arrived, then keeps serving those streams to the end
    (as RFC 9113 section 6.8 allows). The GOAWAY frame is written by hand because
    h2 refuses to send anything after its own GOAWAY (h2#1181).

    The first ``refuse_first`` requests get RST_STREAM(REFUSED_STREAM) instead.
    Yields the URL and the list of completed stream ids (per connection, in order).
    """
    refused = 0
    completed: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal refused
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        started = 0
        goaway_sent = False
        open_streams: set[int] = set()

        async def serve_stream(sid: int) -> None:
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/x-ndjson")])
            writer.write(conn.data_to_send())
            for i in range(lines):
                await asyncio.sleep(1 / rate)
                conn.send_data(
                    sid, json.dumps({"response": f"t{i} ", "done": False}).encode() + b"\n"
                )
                writer.write(conn.data_to_send())
            conn.send_data(sid, b'{"response": "", "done": true}\n', end_stream=True)
            writer.write(conn.data_to_send())
            completed.append(sid)
            open_streams.discard(sid)
            if goaway_sent and not open_streams:
                writer.close()

        while True:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    if refused < refuse_first:
                        refused += 1
                        conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                        continue
                    if goaway_sent:
                        continue  # above last_stream_id: never processed
                    started += 1
                    open_streams.add(event.stream_id)
                    task = asyncio.create_task(serve_stream(event.stream_id))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    if started == goaway_after:
                        frame = hyperframe.frame.GoAwayFrame(0)
                        frame.last_stream_id = event.stream_id
                        frame.error_code = 0
                        writer.write(conn.data_to_send() + frame.serialize())
                        goaway_sent = True
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            writer.write(conn.data_to_send())

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", completed
    finally:
        for task in list(tasks):
            task.cancel()
        server.close()
        await server.wait_closed()


async def count_lines(client: httpx.AsyncClient, url: str, **body: object) -> int:
    async with client.stream("POST", url + "/gen", json=body) as response:
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"
        lines = 0
        async for data in response.aiter_raw():
            lines += data.count(b"\n")
        return lines
