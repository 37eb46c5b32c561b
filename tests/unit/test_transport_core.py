"""The sans-I/O HTTP/2 connection core and the shared wire module: bytes in, events out.

No sockets, no event loop: a real ``h2`` server connection (or hand-built frames)
produces the bytes, ``H2Core.receive_data`` takes them with the time as an
argument, and what it returns (streams with news, connection events) and what it
has to send (``data_to_send``) are checked directly.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from resilient_stream import h2wire
from resilient_stream.buffering.consumer import ConsumerBudget
from resilient_stream.buffering.sizing import WindowSizing
from resilient_stream.errors import (
    ConnectionLostError,
    FloodError,
    GoAwayError,
    RefusedStreamError,
    StreamResetError,
)
from resilient_stream.h2wire import ErrorCode
from resilient_stream.transport.core import BDP_PING, KEEPALIVE_PING, H2Core
from resilient_stream.transport.events import (
    ConnectionEnded,
    Flooded,
    GoAwayReceived,
    PingAcked,
    Received,
    SettingsReceived,
    StreamClosed,
    WindowOpened,
)
from resilient_stream.transport.flood import BURST
from resilient_stream.transport.h2setup import ConnectionSettings, NotHttp2Error
from resilient_stream.transport.headers import request_headers
from resilient_stream.transport.keepalive import Keepalive
from resilient_stream.transport.stream import H2Stream

ENDPOINT = "http://test:80"


def settings(**kw: object) -> ConnectionSettings:
    args: dict[str, object] = dict(
        max_streams=100,
        stream_window=65_535,
        connection_window=1 << 20,
        ping_interval=0,
        ping_timeout=1,
    )
    args.update(kw)
    return ConnectionSettings(**args)  # type: ignore[arg-type]


def server_connection() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )


def handshake(
    cfg: ConnectionSettings | None = None, now: float = 0.0
) -> tuple[H2Core, h2.connection.H2Connection, list[Received]]:
    core = H2Core(cfg or settings(), ENDPOINT, now)
    core.initiate()
    server = server_connection()
    server.initiate_connection()
    server.receive_data(core.data_to_send())
    events = core.receive_data(server.data_to_send(), now)
    server.receive_data(core.data_to_send())  # our SETTINGS ACK (and window update)
    return core, server, events


def get(core: H2Core, path: str = "/") -> H2Stream:
    request = httpx.Request("GET", f"http://test{path}")
    return core.open_stream(request_headers(request), end_stream=True)


def respond(
    core: H2Core, server: h2.connection.H2Connection, *streams: H2Stream, now: float = 0.0
) -> list[Received]:
    server.receive_data(core.data_to_send())
    for s in streams:
        server.send_headers(s.stream_id, [(b":status", b"200")])
    return core.receive_data(server.data_to_send(), now)


def of_type(events: list[Received], cls: type) -> list[object]:
    return [e for e in events if isinstance(e, cls)]


# --- the shared wire module -------------------------------------------------------------


def test_split_frames_reports_whole_frames_and_stops_at_a_partial_or_oversized_one() -> None:
    a = h2wire.pack_header(h2wire.DATA, h2wire.FLAG_END_STREAM, 1, 3) + b"abc"
    b = h2wire.pack_header(h2wire.PING, 0, 0, 8) + b"12345678"
    spans: list[h2wire.FrameSpan] = []
    assert h2wire.split_frames(a + b + b[:5], 0, spans) == len(a + b)
    assert spans == [(h2wire.DATA, 1, 1, 0, 12), (h2wire.PING, 0, 0, 12, 29)]

    big = h2wire.pack_header(h2wire.DATA, 0, 3, 100_000)  # announced, not sent
    spans.clear()
    assert h2wire.split_frames(a + big, 0, spans, max_length=16_384) == len(a)
    assert len(spans) == 1
    assert h2wire.frame_length(a + big, len(a)) == 100_000

    # The reserved bit of the stream id is masked off.
    spans.clear()
    h2wire.split_frames(h2wire.HEADER.pack(0, 0, h2wire.DATA, 0, 0x80000005), 0, spans)
    assert spans == [(h2wire.DATA, 0, 5, 0, 9)]


def test_one_error_code_table_names_every_code() -> None:
    assert h2wire.error_name(0x7) == "REFUSED_STREAM"
    assert h2wire.error_name(int(ErrorCode.ENHANCE_YOUR_CALM)) == "ENHANCE_YOUR_CALM"
    assert h2wire.error_name(0x99) == "error code 153"
    assert h2wire.MAX_WINDOW == 2**31 - 1


# --- handshake, streams, data ------------------------------------------------------------


def test_the_handshake_reports_the_servers_stream_limit() -> None:
    core = H2Core(settings(max_streams=50), ENDPOINT)
    core.initiate()
    out = core.data_to_send()
    assert out.startswith(h2wire.CLIENT_PREFACE)
    assert core.data_to_send() == b""  # taken

    server = server_connection()
    server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 7})
    server.receive_data(out)
    events = core.receive_data(server.data_to_send(), 0.0)
    (settings_event,) = of_type(events, SettingsReceived)
    assert isinstance(settings_event, SettingsReceived) and settings_event.capacity == 7
    assert core.ready and core.capacity == 7


def test_a_read_of_data_lists_each_stream_once_and_queues_nothing() -> None:
    core, server, _ = handshake(settings(stream_window=1 << 20))
    a, b = get(core, "/a"), get(core, "/b")
    news = respond(core, server, a, b)
    assert news == [a, b]  # headers: news for both
    assert (a.status, b.status) == (200, 200)
    core.data_to_send()  # (h2 saw the HEADERS frames: it may have had something to say)
    for _ in range(3):
        server.send_data(a.stream_id, b"x" * 100)
        server.send_data(b.stream_id, b"y" * 100)
    events = core.receive_data(server.data_to_send(), 0.0)
    assert events == [a, b]
    assert b"".join(a.chunks) == b"x" * 300 and a.unacked == 300
    assert not core.pending  # 600 bytes are below every window's update threshold
    assert core.data_to_send() == b""

    # Already buffered (the reader has not taken it): no news again.
    server.send_data(a.stream_id, b"z")
    assert core.receive_data(server.data_to_send(), 0.0) == []
    assert a.chunks[-1] == b"z"


def test_the_end_of_a_stream_frees_its_slot() -> None:
    core, server, _ = handshake()
    s = get(core)
    respond(core, server, s)
    server.send_data(s.stream_id, b"done", end_stream=True)
    events = core.receive_data(server.data_to_send(), 0.0)
    closed = of_type(events, StreamClosed)
    assert len(closed) == 1 and isinstance(closed[0], StreamClosed) and closed[0].stream is s
    assert s.ended and s.chunks == [b"done"] and core.streams == {}


def test_an_answer_before_the_request_body_went_out_cancels_the_upload() -> None:
    core, server, _ = handshake()
    s = core.open_stream(request_headers(httpx.Request("POST", "http://test/")), False)
    server.receive_data(core.data_to_send())
    server.send_headers(s.stream_id, [(b":status", b"413")], end_stream=True)
    core.receive_data(server.data_to_send(), 0.0)
    assert s.ended and s.status == 413 and not s.request_done
    resets = of_type(server.receive_data(core.data_to_send()), h2.events.StreamReset)
    assert [r.error_code for r in resets] == [ErrorCode.CANCEL]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("code", "error"),
    [(ErrorCode.REFUSED_STREAM, RefusedStreamError), (ErrorCode.INTERNAL_ERROR, StreamResetError)],
)
def test_a_reset_from_the_server_fails_that_stream_only(code: ErrorCode, error: type) -> None:
    core, server, _ = handshake()
    s, other = get(core, "/1"), get(core, "/2")
    respond(core, server)
    server.reset_stream(s.stream_id, code)
    events = core.receive_data(server.data_to_send(), 0.0)
    assert [e.stream for e in events if isinstance(e, StreamClosed)] == [s]
    assert type(s.error) is error and code.name in str(s.error)
    assert other.error is None and list(core.streams) == [other.stream_id]


def test_our_reset_drops_what_waited_and_frees_the_slot_once() -> None:
    core, server, _ = handshake()
    s = get(core)
    respond(core, server, s)
    server.send_data(s.stream_id, b"unread")
    core.receive_data(server.data_to_send(), 0.0)
    assert core.reset_stream(s)
    assert s.chunks == [] and core.streams == {}
    assert not core.reset_stream(s)  # already gone: no second slot to free
    resets = of_type(server.receive_data(core.data_to_send()), h2.events.StreamReset)
    assert [r.error_code for r in resets] == [ErrorCode.CANCEL]  # type: ignore[attr-defined]


def test_a_window_update_for_our_upload_is_reported() -> None:
    core, server, _ = handshake()
    request = httpx.Request("POST", "http://test/", content=b"body")
    s = core.open_stream(request_headers(request), False)
    server.receive_data(core.data_to_send())
    assert core.sendable(s) == 16_384  # min(65,535 window, 16 KiB frames)
    server.increment_flow_control_window(1000, stream_id=s.stream_id)
    events = core.receive_data(server.data_to_send(), 0.0)
    assert of_type(events, WindowOpened)
    core.send_data(s, b"body")
    core.end_request(s)
    received = server.receive_data(core.data_to_send())
    assert of_type(received, h2.events.DataReceived) and s.request_done


# --- GOAWAY, floods, protocol errors ---------------------------------------------------------


def test_graceful_goaway_fails_only_the_unprocessed_streams_and_lets_the_rest_drain() -> None:
    core, server, _ = handshake()
    first, second = get(core, "/1"), get(core, "/2")
    respond(core, server, first)
    server.close_connection(last_stream_id=first.stream_id)
    events = core.receive_data(server.data_to_send(), 0.0)
    goaway = of_type(events, GoAwayReceived)
    assert len(goaway) == 1 and isinstance(goaway[0], GoAwayReceived)
    assert (goaway[0].unprocessed, goaway[0].draining) == (1, 1)
    assert [e.stream for e in events if isinstance(e, StreamClosed)] == [second]
    assert isinstance(second.error, GoAwayError) and not second.error.processed
    assert core.goaway and not core.closed  # the first stream may still finish
    assert core.unsent_error().processed is False

    # h2 would call this a protocol error after GOAWAY (h2#1181); the draining stream ends.
    frame = h2wire.pack_header(h2wire.DATA, h2wire.FLAG_END_STREAM, first.stream_id, 4)
    events = core.receive_data(frame + b"tail", 0.0)
    assert [e.stream for e in events if isinstance(e, StreamClosed)] == [first]
    assert first.error is None and first.chunks == [b"tail"] and core.streams == {}


def test_goaway_with_an_error_ends_the_connection_and_every_stream() -> None:
    core, server, _ = handshake()
    s = get(core)
    respond(core, server, s)
    server.close_connection(error_code=ErrorCode.INTERNAL_ERROR, last_stream_id=s.stream_id)
    events = core.receive_data(server.data_to_send(), 0.0)
    (ended,) = of_type(events, ConnectionEnded)
    assert isinstance(ended, ConnectionEnded) and not ended.abort and ended.failed == [s]
    assert isinstance(s.error, GoAwayError) and s.error.processed
    assert core.closed and core.streams == {}
    assert core.receive_data(b"anything", 0.0) == []  # closed: input is ignored


def test_a_ping_flood_is_cut_off_with_enhance_your_calm() -> None:
    core, _, _ = handshake()
    s = get(core)
    ping = h2wire.pack_header(h2wire.PING, 0, 0, 8) + b"flooding"
    events = core.receive_data(ping * (BURST + 10), 0.0)
    (flooded,) = of_type(events, Flooded)
    assert isinstance(flooded, Flooded) and flooded.frame == "PING" and flooded.streams == 1
    (ended,) = of_type(events, ConnectionEnded)
    assert isinstance(ended, ConnectionEnded) and isinstance(ended.error, FloodError)
    assert not ended.abort  # the GOAWAY naming why goes out first
    assert s.error is ended.error
    out = core.data_to_send()
    spans: list[h2wire.FrameSpan] = []
    h2wire.split_frames(out, 0, spans)
    goaways = [out[start + 9 : end] for t, _, _, start, end in spans if t == h2wire.GOAWAY]
    assert [int.from_bytes(g[4:8], "big") for g in goaways] == [ErrorCode.ENHANCE_YOUR_CALM]
    acks = sum(1 for t, *_ in spans if t == h2wire.PING)
    assert acks <= BURST + 2  # the PINGs past the budget were never answered


def test_an_http1_answer_to_the_preface_ends_the_connection_at_once() -> None:
    core = H2Core(settings(), ENDPOINT)
    core.initiate()
    events = core.receive_data(b"HTTP/1.1 505 HTTP Version Not Supported\r\n", 0.0)
    (ended,) = of_type(events, ConnectionEnded)  # decided from the first byte
    assert isinstance(ended, ConnectionEnded) and ended.abort
    assert isinstance(ended.error, NotHttp2Error) and "HTTP/1" in str(ended.error)

    core = H2Core(settings(), ENDPOINT)
    core.initiate()
    assert core.receive_data(b"\x00\x00", 0.0) == []  # fewer than 9 bytes, all plausible
    events = core.receive_data(b"\x06\x01\x04\x00\x00\x00\x01", 0.0)  # HEADERS first
    (ended,) = of_type(events, ConnectionEnded)
    assert isinstance(ended, ConnectionEnded) and isinstance(ended.error, NotHttp2Error)


def test_a_protocol_error_aborts_with_a_goaway() -> None:
    core, _, _ = handshake()
    # DATA on stream 0 is a connection error (RFC 9113 section 6.1).
    events = core.receive_data(h2wire.pack_header(h2wire.DATA, 0, 0, 1) + b"x", 0.0)
    (ended,) = of_type(events, ConnectionEnded)
    assert isinstance(ended, ConnectionEnded) and ended.abort
    assert isinstance(ended.error, ConnectionLostError) and "protocol error" in str(ended.error)
    assert core.pending  # h2's GOAWAY, for the edge to write before it drops the socket


def test_terminate_fails_every_open_stream_once() -> None:
    core, _, _ = handshake()
    streams = [get(core, f"/{i}") for i in range(3)]
    error = ConnectionLostError("gone", endpoint=ENDPOINT)
    assert core.terminate(error) == streams
    assert all(s.error is error for s in streams) and core.close_reason is error
    assert core.terminate(ConnectionLostError("again", endpoint=ENDPOINT)) is None
    assert isinstance(core.lost_error("closed"), ConnectionLostError)


# --- liveness and window sizing ----------------------------------------------------------------


def test_keepalive_pings_only_a_quiet_connection_and_gives_up_without_an_ack() -> None:
    k = Keepalive(interval=1.0, timeout=0.5, now=0.0)
    assert not k.due(0.5) and k.next_check(0.5) == 1.0
    k.last_recv = 0.8  # traffic: the next check moves
    assert not k.due(1.0) and k.next_check(1.0) == pytest.approx(1.8)
    assert k.due(1.8)
    k.sent(1.8)
    assert not k.due(5.0)  # one PING in flight at a time
    assert k.next_check(1.9) == pytest.approx(2.3)
    assert not k.expired(2.0) and k.expired(2.3)
    assert k.acked(2.0) and k.rtt == pytest.approx(0.2)
    assert not k.acked(2.1)  # no PING in flight: nothing to ack
    assert not Keepalive(interval=0, timeout=1, now=0).enabled


def test_the_ack_of_our_keepalive_ping_is_reported_with_its_round_trip() -> None:
    core, server, _ = handshake(settings(ping_interval=1.0, ping_timeout=2.0))
    assert core.keepalive.due(1.0) and core.send_keepalive_ping(1.0)
    received = server.receive_data(core.data_to_send())
    assert [e.ping_data for e in of_type(received, h2.events.PingReceived)] == [  # type: ignore[attr-defined]
        KEEPALIVE_PING
    ]
    events = core.receive_data(server.data_to_send(), 1.25)
    assert of_type(events, PingAcked)
    assert core.rtt == pytest.approx(0.25)


def test_data_reads_send_bdp_probes_and_their_acks_are_not_keepalive() -> None:
    sizing = WindowSizing(floor=65_536, cap=1 << 24, initial=1 << 20, connection_floor=1 << 20)
    budget = ConsumerBudget(target_latency=1.0, floor=65_536, cap=1 << 24)
    cfg = settings(stream_window=1 << 20, sizing=sizing, budget=budget)
    core, server, _ = handshake(cfg)
    s = get(core)
    respond(core, server, s)
    server.send_data(s.stream_id, b"x" * 1000)
    core.receive_data(server.data_to_send(), 1.0)
    received = server.receive_data(core.data_to_send())
    pings = [e.ping_data for e in of_type(received, h2.events.PingReceived)]  # type: ignore[attr-defined]
    assert pings == [BDP_PING]
    events = core.receive_data(server.data_to_send(), 1.1)
    assert not of_type(events, PingAcked)  # the probe's ACK feeds the BDP estimate
    assert core.rtt == pytest.approx(0.1)
