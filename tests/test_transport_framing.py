"""The connection's own framing and DATA fast path, fed bytes directly (no sockets).

A real ``h2`` server connection produces the bytes (padded and unpadded DATA,
END_STREAM on DATA, trailers, interleaved streams); they reach the client
protocol split at arbitrary points. Every stream must get exactly its payload,
and h2's own window accounting must match what arrived.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_stream.transport.connection import H2ClientConnection
from resilient_stream.transport.h2setup import ConnectionSettings
from resilient_stream.transport.pool import OriginPool

STREAM_WINDOW = 262_144


class MemoryTransport(asyncio.Transport):
    """Collects what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data


# One response piece: (stream index 0..2, payload size, padding or None)
pieces = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 5000), st.one_of(st.none(), st.integers(0, 255))),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=pieces, cuts=st.lists(st.integers(1, 20_000), max_size=30))
def test_every_stream_gets_exactly_its_bytes_however_the_reads_are_split(
    plan: list[tuple[int, int, int | None]], cuts: list[int]
) -> None:
    loop = asyncio.new_event_loop()
    try:
        cfg = ConnectionSettings(
            max_streams=100,
            stream_window=STREAM_WINDOW,
            connection_window=1 << 24,
            ping_interval=0,
            ping_timeout=1,
        )
        pool = OriginPool(
            scheme="http",
            host="test",
            port=80,
            settings=cfg,
            max_connections=1,
            keepalive_expiry=60,
            ssl_context=None,
        )
        conn = H2ClientConnection(pool, cfg, loop, "http://test:80")
        transport = MemoryTransport()
        conn.connection_made(transport)
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        server.receive_data(transport.take())
        conn.data_received(server.data_to_send())
        assert conn.ready.done() and conn.ready.exception() is None

        streams = [
            conn.open_stream(httpx.Request("GET", f"http://test/{i}"), False, None)
            for i in range(3)
        ]
        events = server.receive_data(transport.take())
        assert sum(isinstance(e, h2.events.RequestReceived) for e in events) == 3
        ids = [s.stream_id for s in streams]
        expected = [bytearray() for _ in ids]
        flow = [0, 0, 0]
        for sid in ids:
            server.send_headers(sid, [(":status", "200")])
        for n, (i, size, pad) in enumerate(plan):
            payload = bytes([n % 256]) * size
            server.send_data(ids[i], payload, pad_length=pad)
            expected[i] += payload
            flow[i] += size + (pad + 1 if pad is not None else 0)
        # Three different endings: END_STREAM on DATA, trailers, empty DATA.
        server.send_data(ids[0], b"end", end_stream=True)
        expected[0] += b"end"
        flow[0] += 3
        server.send_headers(ids[1], [("x-trailer", "1")], end_stream=True)
        server.end_stream(ids[2])
        wire = server.data_to_send()

        pos = 0
        for cut in cuts:
            if pos >= len(wire):
                break
            conn.data_received(wire[pos : pos + cut])
            pos += cut
        if pos < len(wire):
            conn.data_received(wire[pos:])

        assert not conn.closed, conn.close_reason
        for s, want, fc in zip(streams, expected, flow, strict=True):
            assert s.error is None
            assert s.status == 200
            assert s.ended
            assert b"".join(s.chunks) == want
            assert s.unacked == fc
            # h2's stream window saw every flow-controlled byte (fast path or not).
            assert s.h2_window.current_window_size == STREAM_WINDOW - fc
        assert conn.streams == {}  # all three ended: their slots are free
    finally:
        loop.close()


def test_resizing_windows_sends_the_growth_at_once_and_withholds_after_a_shrink() -> None:
    loop = asyncio.new_event_loop()
    try:
        cfg = ConnectionSettings(
            max_streams=100,
            stream_window=65_536,
            connection_window=1 << 20,
            ping_interval=0,
            ping_timeout=1,
        )
        pool = OriginPool(
            scheme="http",
            host="test",
            port=80,
            settings=cfg,
            max_connections=1,
            keepalive_expiry=60,
            ssl_context=None,
        )
        conn = H2ClientConnection(pool, cfg, loop, "http://test:80")
        transport = MemoryTransport()
        conn.connection_made(transport)
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        server.receive_data(transport.take())
        conn.data_received(server.data_to_send())
        s = conn.open_stream(httpx.Request("GET", "http://test/"), False, None)
        server.receive_data(transport.take())

        conn.set_stream_window(s, 1 << 20)
        conn.set_connection_window(1 << 22)
        updates = {
            e.stream_id: e.delta
            for e in server.receive_data(transport.take())
            if isinstance(e, h2.events.WindowUpdated)
        }
        assert updates == {s.stream_id: (1 << 20) - 65_536, 0: (1 << 22) - (1 << 20)}

        conn.set_stream_window(s, 1 << 19)  # shrink: no frame now...
        assert transport.take() == b""
        server.send_headers(s.stream_id, [(":status", "200")])
        for _ in range(19):
            server.send_data(s.stream_id, b"x" * 16_000)
        conn.data_received(server.data_to_send())
        # 304,000 bytes read: past half the new window, so an unshrunk window would
        # grant them back now; the 512 KiB of credit we withdrew is withheld instead.
        conn.stream_data_consumed(s, 304_000)
        stream_updates = [
            e
            for e in server.receive_data(transport.take())
            if isinstance(e, h2.events.WindowUpdated) and e.stream_id == s.stream_id
        ]
        assert stream_updates == []
    finally:
        loop.close()


def test_frames_arriving_after_a_cancel_are_dropped_but_credit_the_connection() -> None:
    loop = asyncio.new_event_loop()
    try:
        cfg = ConnectionSettings(
            max_streams=100,
            stream_window=1 << 20,
            connection_window=131_072,
            ping_interval=0,
            ping_timeout=1,
        )
        pool = OriginPool(
            scheme="http",
            host="test",
            port=80,
            settings=cfg,
            max_connections=1,
            keepalive_expiry=60,
            ssl_context=None,
        )
        conn = H2ClientConnection(pool, cfg, loop, "http://test:80")
        transport = MemoryTransport()
        conn.connection_made(transport)
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        server.receive_data(transport.take())
        conn.data_received(server.data_to_send())
        server.receive_data(transport.take())  # our SETTINGS ACK + window update
        s = conn.open_stream(httpx.Request("GET", "http://test/"), False, None)
        server.receive_data(transport.take())
        server.send_headers(s.stream_id, [(":status", "200")])
        conn.data_received(server.data_to_send())

        conn.close_stream(s)  # RST_STREAM(CANCEL) is written...
        assert conn.streams == {}
        # ...but the server already sent 120 KB before reading it.
        for _ in range(8):
            server.send_data(s.stream_id, b"x" * 15_000)
        conn.data_received(server.data_to_send())

        assert s.chunks == []  # discarded
        events = server.receive_data(transport.take())
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        credit = sum(
            e.delta for e in events if isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0
        )
        assert resets and resets[0].error_code == h2.errors.ErrorCodes.CANCEL
        assert credit >= 65_536  # the connection window is handed back
        assert not conn.closed
    finally:
        loop.close()


def test_an_oversized_frame_is_a_protocol_error_without_waiting_for_its_body() -> None:
    loop = asyncio.new_event_loop()
    try:
        cfg = ConnectionSettings(
            max_streams=100,
            stream_window=65_536,
            connection_window=1 << 20,
            ping_interval=0,
            ping_timeout=1,
        )
        pool = OriginPool(
            scheme="http",
            host="test",
            port=80,
            settings=cfg,
            max_connections=1,
            keepalive_expiry=60,
            ssl_context=None,
        )
        conn = H2ClientConnection(pool, cfg, loop, "http://test:80")
        conn.connection_made(MemoryTransport())
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        conn.data_received(server.data_to_send())
        # A DATA frame header announcing 4 MB (limit 16 KiB), then only 100 bytes of it.
        conn.data_received(
            (4_000_000).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01" + b"x" * 100
        )
        assert conn.closed
        assert "protocol error" in str(conn.close_reason)
    finally:
        loop.close()
