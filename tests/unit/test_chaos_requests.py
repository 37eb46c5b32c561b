"""Request-keyed, line-aligned per-stream faults without sockets: the plan follows what
was asked and where the lines end, not stream ids, connections or frame boundaries."""

from __future__ import annotations

import hashlib
import random

import pytest

from resilient_stream.chaos import h2frames as h2
from resilient_stream.chaos.core import ConnectionCore
from resilient_stream.chaos.fault_log import FaultRecord
from resilient_stream.chaos.ops import Close, Data, Inject, Later, Op
from resilient_stream.chaos.request_tracker import RequestCounts, RequestTracker
from resilient_stream.chaos.spec import to_spec
from resilient_stream.chaos.toxic import InvalidToxicError, validate_spec

SETTINGS = h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0)
END_HEADERS = 0x4
PROMPT = b'{"prompt":"p"}'


def request(sid: int, body: bytes, *, pieces: int = 1) -> bytes:
    """A client request: HEADERS, then the body in ``pieces`` DATA frames (END_STREAM last)."""
    out = h2.frame(h2.HEADERS, END_HEADERS, sid, b"\x83\x86")  # :method POST, :scheme http
    step = max(1, -(-len(body) // pieces))
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    for n, chunk in enumerate(chunks):
        out += h2.data_frame(sid, chunk, h2.FLAG_END_STREAM if n == len(chunks) - 1 else 0)
    return out


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def response_headers(sid: int) -> bytes:
    return h2.frame(h2.HEADERS, END_HEADERS, sid, b"\x88")


def lines(n: int, tag: str = "") -> bytes:
    return b"".join(b'{"response":"tok %d%s"}\n' % (i, tag.encode()) for i in range(n))


def frames_of(data: bytes) -> list[h2.Frame]:
    """Parse bytes the proxy wrote; raises if a frame is incomplete (``buffered``)."""
    splitter = h2.FrameSplitter(expect_preface=False)
    out = splitter.feed(data)
    assert splitter.buffered == 0, "a partial (torn) frame"
    return out


def data_out(ops: list[Op]) -> bytes:
    return b"".join(op.data for op in ops if isinstance(op, Data))


def core_for(
    spec: str, *, index: int = 0, seed: int = 1, counts: RequestCounts | None = None
) -> tuple[ConnectionCore, list[FaultRecord]]:
    faults: list[FaultRecord] = []
    core = ConnectionCore(
        index=index,
        seed=seed,
        specs=[to_spec(spec)],
        clock=lambda: 0.0,
        sink=faults.append,
        requests=counts,
    )
    core.client_data(SETTINGS)
    return core, faults


# --- the tracker -------------------------------------------------------------------


def test_tracker_names_streams_by_body_hash_and_counts_repeats_of_a_body() -> None:
    tracker = RequestTracker(RequestCounts())
    a, b = b'{"prompt":"a"}', b'{"prompt":"b"}'
    tracker.feed(SETTINGS + request(1, a) + request(3, a) + request(5, b))
    assert tracker.key(1) == f"{digest(a)}#0"
    assert tracker.key(3) == f"{digest(a)}#1"  # a retry of the same request: a draw of its own
    assert tracker.key(5) == f"{digest(b)}#0"


def test_tracker_key_waits_for_end_stream_and_hashes_the_body_across_frames_and_reads() -> None:
    tracker = RequestTracker(RequestCounts())
    body = b'{"prompt":"' + b"x" * 300 + b'"}'
    stream = SETTINGS + request(1, body, pieces=4)
    for i in range(len(stream) - 1):
        tracker.feed(stream[i : i + 1])
        assert tracker.key(1) is None  # the request is not complete yet
    tracker.feed(stream[-1:])
    assert tracker.key(1) == f"{digest(body)}#0"


def test_tracker_leaves_padding_out_of_the_body_hash() -> None:
    tracker = RequestTracker(RequestCounts())
    body = b'{"p":1}'
    padded = bytes([3]) + body + b"\0\0\0"
    headers = h2.frame(h2.HEADERS, END_HEADERS, 1, b"\x83")
    tracker.feed(SETTINGS + headers + h2.data_frame(1, padded, h2.FLAG_END_STREAM | h2.FLAG_PADDED))
    assert tracker.key(1) == f"{digest(body)}#0"


def test_tracker_gives_a_bodiless_request_the_empty_body_key() -> None:
    tracker = RequestTracker(RequestCounts())
    tracker.feed(SETTINGS + h2.frame(h2.HEADERS, END_HEADERS | h2.FLAG_END_STREAM, 1, b"\x82"))
    assert tracker.key(1) == f"{digest(b'')}#0"


def test_request_counts_shared_by_two_connections_number_repeats_across_them() -> None:
    counts = RequestCounts()
    first, second = RequestTracker(counts), RequestTracker(counts)
    body = b'{"prompt":"same"}'
    first.feed(SETTINGS + request(1, body))
    second.feed(SETTINGS + request(9, body))
    assert (first.key(1), second.key(9)) == (f"{digest(body)}#0", f"{digest(body)}#1")


def test_tracker_stays_out_of_non_http2_connections() -> None:
    tracker = RequestTracker(RequestCounts())
    tracker.feed(b"POST / HTTP/1.1\r\n\r\n" + request(1, b"{}"))
    assert tracker.key(1) is None


# --- request-keyed decisions ----------------------------------------------------------


Hit = tuple[tuple[int, str, str], ...]


def hit_by(spec: str, body: bytes, *, index: int, sid: int, seed: int = 3) -> Hit:
    """What a toxic did to the response of ``body``, sent as stream ``sid`` on connection
    ``index``: (offset, detail, request) of each fault."""
    core, faults = core_for(spec, index=index, seed=seed)
    core.client_data(request(sid, body))
    core.upstream_data(response_headers(sid) + h2.data_frame(sid, lines(40), h2.FLAG_END_STREAM))
    return tuple((f.offset, f.detail, f.request) for f in faults)


def test_a_streams_fate_follows_its_request_not_its_connection_or_stream_id() -> None:
    spec = "reset_stream:probability=0.5,min_bytes=0,max_bytes=500"
    bodies = [b'{"prompt":"%d"}' % i for i in range(24)]
    here = [hit_by(spec, b, index=0, sid=1) for b in bodies]
    assert here == [hit_by(spec, b, index=7, sid=13) for b in bodies]
    assert 0 < sum(bool(h) for h in here) < len(bodies)  # the draw depends on the body
    assert all(h[0][2] == f"{digest(b)}#0" for h, b in zip(here, bodies, strict=True) if h)
    # The old keying (connection index, stream id) is still there on request: then the
    # body plays no part, and no request is recorded.
    old = spec.replace("reset_stream:", "reset_stream:keyed_by=stream,")
    by_stream = {hit_by(old, b, index=0, sid=1, seed=s) for b in bodies for s in (3,)}
    assert len(by_stream) == 1
    assert all(r == "" for (_, _, r) in next(iter(by_stream)))


def test_a_different_seed_gives_a_different_plan_for_the_same_requests() -> None:
    spec = "reset_stream:probability=0.5,min_bytes=0,max_bytes=500"
    bodies = [b'{"prompt":"%d"}' % i for i in range(24)]
    plan = [hit_by(spec, b, index=0, sid=1, seed=3) for b in bodies]
    assert plan != [hit_by(spec, b, index=0, sid=1, seed=4) for b in bodies]


def test_keyed_by_is_validated() -> None:
    with pytest.raises(InvalidToxicError, match="keyed_by"):
        validate_spec(to_spec("reset_stream:keyed_by=connection"))
    with pytest.raises(InvalidToxicError, match="then"):
        validate_spec(to_spec("cut_data:then=explode"))


def test_plan_key_names_a_request_fault_by_its_request_not_its_connection() -> None:
    a = FaultRecord(1.0, 0, 1, "reset_stream", "rs", "downstream", 25, "lines=2", 20, "ab#0")
    b = FaultRecord(9.0, 4, 17, "reset_stream", "rs", "downstream", 25, "lines=2", 12, "ab#0")
    assert a.plan_key() == b.plan_key()
    conn_a = FaultRecord(1.0, 0, 0, "goaway", "g", "downstream", 6, "frames=6")
    conn_b = FaultRecord(1.0, 1, 0, "goaway", "g", "downstream", 6, "frames=6")
    assert conn_a.plan_key() != conn_b.plan_key()


# --- line-aligned firing: the crossing frame is split --------------------------------


def fire(spec: str, frames: list[bytes], *, sid: int = 1) -> tuple[list[Op], list[FaultRecord]]:
    core, faults = core_for(spec)
    core.client_data(request(sid, PROMPT))
    ops: list[Op] = []
    for f in [response_headers(sid), *frames]:
        ops += core.upstream_data(f)
    return ops, faults


def test_reset_forwards_the_whole_lines_before_the_offset_as_a_valid_data_frame() -> None:
    body = b"0123456789\n" * 3  # lines end at bytes 11, 22, 33
    ops, faults = fire("reset_stream:min_bytes=25,max_bytes=25", [h2.data_frame(1, body, 1)])
    out = frames_of(data_out(ops))
    assert [(f.type, f.flags, f.stream_id) for f in out] == [
        (h2.HEADERS, END_HEADERS, 1),
        (h2.DATA, 0, 1),  # END_STREAM dropped with the rest of the frame
        (h2.RST_STREAM, 0, 1),
    ]
    assert out[1].length == 22 and out[1].data() == body[:22]
    injects = [op for op in ops if isinstance(op, Inject)]
    assert injects == [
        Inject(h2.rst_stream(1, h2.CANCEL), "upstream"),
        Inject(h2.window_update(0, len(body) - 22), "upstream"),  # only the dropped rest
    ]
    ((offset, detail, actual, request),) = [
        (f.offset, f.detail, f.actual, f.request) for f in faults
    ]
    assert (offset, detail, actual) == (25, "error_code=2 lines=2", 22)
    assert request == f"{digest(PROMPT)}#0"


def test_splitting_a_padded_frame_drops_the_padding() -> None:
    body = b"abc\ndef\nghi\n"
    padded = bytes([5]) + body + b"\0" * 5
    frame = h2.data_frame(1, padded, h2.FLAG_PADDED | h2.FLAG_END_STREAM)
    ops, faults = fire("stall_stream:min_bytes=9,max_bytes=9", [frame])
    out = frames_of(data_out(ops))
    assert [(f.type, f.flags, f.raw[9:]) for f in out[1:]] == [(h2.DATA, 0, b"abc\ndef\n")]
    assert Inject(h2.window_update(0, len(padded) - 8), "upstream") in ops
    assert faults[0].detail == "duration=0 lines=2"


def test_the_receiver_holds_the_same_lines_however_the_sender_cut_its_frames() -> None:
    body = lines(60)
    target = 1000
    expected = body[: body.rfind(b"\n", 0, target) + 1]
    rng = random.Random(5)
    for spec in ("reset_stream", "stall_stream"):
        plans = set()
        for _ in range(30):
            cuts = sorted(rng.sample(range(1, len(body)), rng.randint(1, 40)))
            pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
            frames = [h2.data_frame(1, p) for p in pieces]
            ops, faults = fire(f"{spec}:min_bytes={target},max_bytes={target}", frames)
            got = b"".join(f.data() for f in frames_of(data_out(ops)) if f.type == h2.DATA)
            # Whole lines before the offset, plus (only when the crossing frame started
            # mid-line) the partial line the sender had already sent before it.
            assert got.startswith(expected)
            assert b"\n" not in got[len(expected) :]
            plans.add(tuple(f.plan_key() for f in faults))
        assert len(plans) == 1


def test_byte_mode_drops_the_whole_crossing_frame_as_before() -> None:
    body = b"0123456789\n" * 3
    spec = "reset_stream:min_bytes=25,max_bytes=25,line_aligned=false"
    ops, faults = fire(spec, [h2.data_frame(1, body)])
    out = frames_of(data_out(ops))
    assert [f.type for f in out] == [h2.HEADERS, h2.RST_STREAM]
    assert faults[0].detail == "error_code=2"


def test_cut_data_with_then_reset_cuts_mid_line_and_resets_only_that_stream() -> None:
    body = b"0123456789\n" * 3
    core, faults = core_for("cut_data:stream_id=1,min_bytes=15,max_bytes=15,then=reset")
    core.client_data(request(1, b'{"a":1}') + request(3, b'{"b":2}'))
    core.upstream_data(response_headers(1) + response_headers(3))
    ops = core.upstream_data(h2.data_frame(1, body) + h2.data_frame(3, body))
    assert not any(isinstance(op, Close) for op in ops)
    out = frames_of(data_out(ops))
    assert [(f.type, f.stream_id, f.data() if f.type == h2.DATA else b"") for f in out] == [
        (h2.DATA, 1, body[:15]),  # one whole line and 4 bytes of the next
        (h2.RST_STREAM, 1, b""),
        (h2.DATA, 3, body),  # the other stream flows on
    ]
    assert Inject(h2.rst_stream(1, h2.CANCEL), "upstream") in ops
    assert Inject(h2.window_update(0, len(body) - 15), "upstream") in ops
    assert faults[0].detail == "mode=partial then=reset lines=1"
    # Later DATA of the reset stream is dropped and credited.
    ops = core.upstream_data(h2.data_frame(1, b"late\n"))
    assert data_out(ops) == b""
    assert Inject(h2.window_update(0, 5), "upstream") in ops


def test_cut_data_torn_line_aligned_sends_whole_lines_then_a_torn_frame() -> None:
    body = b"0123456789\n" * 3
    ops, _ = fire("cut_data:min_bytes=15,max_bytes=15,torn=true", [h2.data_frame(1, body)])
    assert ops[-1] == Close()
    raw = data_out(ops)
    splitter = h2.FrameSplitter(expect_preface=False)
    complete = splitter.feed(raw)
    assert [(f.type, f.data()) for f in complete[1:]] == [(h2.DATA, body[:11])]
    torn = splitter.take_buffer()
    assert torn[:9] == h2.frame_header(h2.DATA, 0, 1, len(body) - 11)
    assert torn[9:] == body[11:15]


def test_stall_with_duration_still_resets_later_after_a_split() -> None:
    body = b"ab\ncd\n"
    ops, _ = fire("stall_stream:min_bytes=4,max_bytes=4,duration=300", [h2.data_frame(1, body)])
    (later,) = [op for op in ops if isinstance(op, Later)]
    assert later.delay == 0.3
    out = frames_of(data_out(ops))
    assert out[-1].data() == b"ab\n"


def test_of_two_toxics_planned_on_one_stream_only_the_earliest_fires_however_it_is_chunked() -> (
    None
):
    body = b"0123456789\n" * 6
    frames = [h2.data_frame(1, body[i : i + 11]) for i in range(0, len(body), 11)]
    specs = [
        to_spec("reset_stream:min_bytes=40,max_bytes=40"),
        to_spec("stall_stream:min_bytes=15,max_bytes=15"),
    ]
    outcomes = set()
    for chunking in ([b"".join(frames)], frames):  # one read, or one frame per read
        faults: list[FaultRecord] = []
        core = ConnectionCore(index=0, seed=1, specs=specs, clock=lambda: 0.0, sink=faults.append)
        core.client_data(SETTINGS + request(1, PROMPT))
        core.upstream_data(response_headers(1))
        got = b"".join(data_out(core.upstream_data(c)) for c in chunking)
        outcomes.add((tuple((f.kind, f.offset) for f in faults), got))
    assert outcomes == {((("stall_stream", 15),), frames[0])}
