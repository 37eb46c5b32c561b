"""Hostile HTTP/2 servers written with the h2 package, for the storm and flood tests:
each one refuses, drains or floods in one particular way and counts what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

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
    settings_acks: int = 0
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
    ping_every: float | None = None,
) -> AsyncIterator[tuple[str, Seen]]:
    """An h2c server on 127.0.0.1:0. ``on_connect`` may add raw bytes after the server's
    SETTINGS; ``on_request`` answers a request (default: serve :data:`LINES`) and may
    return raw bytes to write after whatever h2 queued; ``ping_every``: a keepalive PING
    that often. Writes are not awaited, so it keeps reading (and counting the client's
    answers) while a large write is still going out."""
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
        keepalive = (
            asyncio.create_task(_keepalive(writer, ping_every, seen)) if ping_every else None
        )
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
                    elif isinstance(event, h2.events.SettingsAcknowledged):
                        seen.settings_acks += 1
                    elif isinstance(event, h2.events.PingReceived):
                        if event.ping_data.startswith(b"rs-bdp"):
                            seen.bdp_pings += 1
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        seen.goaway_codes.append(int(event.error_code or 0))
                writer.write(conn.data_to_send() + raw)
        except (ConnectionError, OSError):
            return
        finally:
            if keepalive is not None:
                keepalive.cancel()
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


async def _keepalive(writer: asyncio.StreamWriter, every: float | None, seen: Seen) -> None:
    assert every is not None
    for _ in range(100_000):  # bounded; cancelled when the connection ends
        await asyncio.sleep(every)
        if writer.is_closing():
            return
        writer.write(ping_frame(b"keepaliv"))
        seen.pings_sent += 1


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
