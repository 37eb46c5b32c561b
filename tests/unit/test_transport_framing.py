"""The connection core's own framing and DATA fast path, fed bytes directly.

A real ``h2`` server connection produces the bytes (padded and unpadded DATA,
END_STREAM on DATA, trailers, interleaved streams); they reach the sans-I/O
core (``H2Core``) split at arbitrary points. Every stream must get exactly its
payload, and h2's own window accounting must match what arrived. No sockets,
no event loop: bytes in, bytes and events out.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_stream.transport.core import H2Core
from resilient_stream.transport.h2setup import ConnectionSettings
from resilient_stream.transport.headers import request_headers
from resilient_stream.transport.stream import H2Stream

STREAM_WINDOW = 262_144
NOW = 1.0  # the core takes the time as an argument; these tests do not depend on it


def connection_settings(stream_window: int, connection_window: int) -> ConnectionSettings:
    return ConnectionSettings(
        max_streams=100,
        stream_window=stream_window,
        connection_window=connection_window,
        ping_interval=0,
        ping_timeout=1,
    )


def handshake(cfg: ConnectionSettings) -> tuple[H2Core, h2.connection.H2Connection]:
    """A core and a real h2 server connection that exchanged prefaces and SETTINGS."""
    core = H2Core(cfg, "http://test:80", NOW)
    core.initiate()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    server.receive_data(core.data_to_send())
    core.receive_data(server.data_to_send(), NOW)
    return core, server


def get(core: H2Core, path: str = "/") -> H2Stream:
    return core.open_stream(request_headers(httpx.Request("GET", f"http://test{path}")), True)


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
    core, server = handshake(connection_settings(STREAM_WINDOW, 1 << 24))
    assert core.ready and core.close_reason is None

    streams = [get(core, f"/{i}") for i in range(3)]
    events = server.receive_data(core.data_to_send())
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
        core.receive_data(wire[pos : pos + cut], NOW)
        pos += cut
    if pos < len(wire):
        core.receive_data(wire[pos:], NOW)

    assert not core.closed, core.close_reason
    for s, want, fc in zip(streams, expected, flow, strict=True):
        assert s.error is None
        assert s.status == 200
        assert s.ended
        assert b"".join(s.chunks) == want
        assert s.unacked == fc
        # h2's stream window saw every flow-controlled byte (fast path or not).
        assert s.h2_window.current_window_size == STREAM_WINDOW - fc
    assert core.streams == {}  # all three ended: their slots are free


def test_resizing_windows_sends_the_growth_at_once_and_withholds_after_a_shrink() -> None:
    core, server = handshake(connection_settings(65_536, 1 << 20))
    s = get(core)
    server.receive_data(core.data_to_send())

    core.set_stream_window(s, 1 << 20)
    core.set_connection_window(1 << 22)
    updates = {
        e.stream_id: e.delta
        for e in server.receive_data(core.data_to_send())
        if isinstance(e, h2.events.WindowUpdated)
    }
    assert updates == {s.stream_id: (1 << 20) - 65_536, 0: (1 << 22) - (1 << 20)}

    core.set_stream_window(s, 1 << 19)  # shrink: no frame now...
    assert core.data_to_send() == b""
    server.send_headers(s.stream_id, [(":status", "200")])
    for _ in range(19):
        server.send_data(s.stream_id, b"x" * 16_000)
    core.receive_data(server.data_to_send(), NOW)
    # 304,000 bytes read: past half the new window, so an unshrunk window would
    # grant them back now; the 512 KiB of credit we withdrew is withheld instead.
    core.stream_data_consumed(s, 304_000, NOW)
    stream_updates = [
        e
        for e in server.receive_data(core.data_to_send())
        if isinstance(e, h2.events.WindowUpdated) and e.stream_id == s.stream_id
    ]
    assert stream_updates == []


def test_frames_arriving_after_a_cancel_are_dropped_but_credit_the_connection() -> None:
    core, server = handshake(connection_settings(1 << 20, 131_072))
    server.receive_data(core.data_to_send())  # our SETTINGS ACK + window update
    s = get(core)
    server.receive_data(core.data_to_send())
    server.send_headers(s.stream_id, [(":status", "200")])
    core.receive_data(server.data_to_send(), NOW)

    assert core.reset_stream(s)  # RST_STREAM(CANCEL) is written...
    assert core.streams == {}
    # ...but the server already sent 120 KB before reading it.
    for _ in range(8):
        server.send_data(s.stream_id, b"x" * 15_000)
    core.receive_data(server.data_to_send(), NOW)

    assert s.chunks == []  # discarded
    events = server.receive_data(core.data_to_send())
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    credit = sum(
        e.delta for e in events if isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0
    )
    assert resets and resets[0].error_code == h2.errors.ErrorCodes.CANCEL
    assert credit >= 65_536  # the connection window is handed back
    assert not core.closed


def test_an_oversized_frame_is_a_protocol_error_without_waiting_for_its_body() -> None:
    core, _ = handshake(connection_settings(65_536, 1 << 20))
    # A DATA frame header announcing 4 MB (limit 16 KiB), then only 100 bytes of it.
    core.receive_data(
        (4_000_000).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01" + b"x" * 100, NOW
    )
    assert core.closed
    assert "protocol error" in str(core.close_reason)
