"""Toxic decisions without sockets: bytes in, operations out."""

from __future__ import annotations

from resilient_stream.chaos import h2frames as h2
from resilient_stream.chaos.core import ConnectionCore
from resilient_stream.chaos.fault_log import FaultRecord
from resilient_stream.chaos.ops import Close, Data, Eof, Inject, Later, Op, Reset, Sleep
from resilient_stream.chaos.spec import to_spec


def make_core(
    *specs: str, seed: int = 1, index: int = 0
) -> tuple[ConnectionCore, list[FaultRecord]]:
    faults: list[FaultRecord] = []
    core = ConnectionCore(
        index=index,
        seed=seed,
        specs=[to_spec(s) for s in specs],
        clock=lambda: 0.0,
        sink=faults.append,
    )
    return core, faults


def data_bytes(ops: list[Op]) -> bytes:
    return b"".join(op.data for op in ops if isinstance(op, Data))


# --- TCP toxics ----------------------------------------------------------------


def test_no_toxics_means_passthrough() -> None:
    core, faults = make_core()
    assert core.passthrough
    assert core.upstream_data(b"abc") == [Data(b"abc")]
    assert faults == []


def test_latency_delays_each_chunk_by_latency_within_jitter() -> None:
    core, faults = make_core("latency:downstream:latency=100,jitter=10")
    delays = []
    for _ in range(50):
        (op,) = core.upstream_data(b"x")
        assert isinstance(op, Data)
        delays.append(op.delay)
    assert all(0.090 <= d <= 0.110 for d in delays)
    assert len(set(delays)) > 1  # jitter varies
    assert [f.kind for f in faults] == ["latency"]  # recorded once per connection


def test_latency_on_upstream_leaves_downstream_alone() -> None:
    core, _ = make_core("latency:upstream:latency=50")
    assert core.upstream_data(b"x") == [Data(b"x")]
    (op,) = core.client_data(b"y")
    assert isinstance(op, Data) and op.delay == 0.05


def test_bandwidth_sleeps_len_over_rate_in_100ms_slices() -> None:
    core, _ = make_core("bandwidth:rate=10")  # 10 KB/s = 10000 B/s, slice 1000 B
    ops = core.upstream_data(b"z" * 2500)
    sleeps = [op.seconds for op in ops if isinstance(op, Sleep)]
    assert data_bytes(ops) == b"z" * 2500
    assert sum(sleeps) == 0.25
    assert max(len(op.data) for op in ops if isinstance(op, Data)) == 1000


def test_slow_close_delays_the_eof() -> None:
    core, faults = make_core("slow_close:delay=300")
    ops = core.eof("downstream")
    assert ops == [Sleep(0.3), Eof()]
    assert faults[0].kind == "slow_close"


def test_timeout_drops_data_and_closes_after_timeout() -> None:
    core, faults = make_core("timeout:timeout=500")
    assert core.open_ops["downstream"] == [Later(0.5, [Close()])]
    assert core.upstream_data(b"lost") == []
    assert core.eof("downstream") == [Close()]
    assert faults[0].kind == "timeout"


def test_timeout_zero_holds_the_connection_open() -> None:
    core, _ = make_core("timeout:timeout=0")
    assert core.open_ops["downstream"] == []
    assert core.upstream_data(b"lost") == []


def test_reset_peer_resets_after_timeout_on_first_data() -> None:
    core, faults = make_core("reset_peer:timeout=20")
    assert core.upstream_data(b"a") == [Sleep(0.02), Reset()]
    assert core.upstream_data(b"b") == []
    assert [f.kind for f in faults] == ["reset_peer"]


def test_slicer_splits_into_pieces_of_average_size_within_variation() -> None:
    core, _ = make_core("slicer:average_size=10,size_variation=3,delay=1000")
    payload = bytes(range(200))
    ops = core.upstream_data(payload)
    pieces = [op.data for op in ops if isinstance(op, Data)]
    assert b"".join(pieces) == payload
    assert all(7 <= len(p) <= 13 for p in pieces[:-1])
    assert [op.seconds for op in ops if isinstance(op, Sleep)] == [0.001] * (len(pieces) - 1)


def test_limit_data_forwards_exactly_the_limit_then_closes() -> None:
    core, faults = make_core("limit_data:bytes=10")
    assert core.upstream_data(b"123456") == [Data(b"123456")]
    assert core.upstream_data(b"7890abc") == [Data(b"7890"), Close()]
    assert core.upstream_data(b"more") == []
    assert faults[0].offset == 10


def test_toxicity_is_rolled_per_connection_from_the_seed() -> None:
    def active(seed: int, index: int) -> bool:
        core, _ = make_core("latency:latency=1,toxicity=0.5", seed=seed, index=index)
        return not core.passthrough

    first = [active(7, i) for i in range(64)]
    assert first == [active(7, i) for i in range(64)]  # replayable
    assert 10 < sum(first) < 54  # about half
    assert first != [active(8, i) for i in range(64)]  # the seed matters


def test_toxics_chain_in_order() -> None:
    core, _ = make_core("limit_data:bytes=4", "latency:latency=10")
    ops = core.upstream_data(b"abcdef")
    assert ops == [Data(b"abcd", 0.01), Close()]


def test_removing_a_toxic_from_a_live_connection_restores_passthrough() -> None:
    core, _ = make_core("latency:latency=10")
    core.remove_toxic("latency_downstream")
    assert core.passthrough
    assert core.upstream_data(b"x") == [Data(b"x")]


# --- HTTP/2 toxics ---------------------------------------------------------------


def h2_core(*specs: str, seed: int = 1) -> tuple[ConnectionCore, list[FaultRecord]]:
    core, faults = make_core(*specs, seed=seed)
    core.client_data(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
    return core, faults


def headers(sid: int) -> bytes:
    return h2.frame(h2.HEADERS, 0x4, sid, b"\x88")  # END_HEADERS, ":status: 200" (indexed)


def test_h2_toxics_leave_non_http2_connections_alone() -> None:
    core, faults = make_core("reset_stream:min_bytes=0,max_bytes=0")
    assert data_bytes(core.client_data(b"GET / HTTP/1.1\r\n\r\n")) == b"GET / HTTP/1.1\r\n\r\n"
    body = b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100
    assert data_bytes(core.upstream_data(body)) == body
    assert faults == []


def test_reset_stream_resets_one_stream_both_ways_and_credits_the_window() -> None:
    core, faults = h2_core("reset_stream:min_bytes=10,max_bytes=10,max_streams=1")
    assert data_bytes(core.upstream_data(headers(1) + headers(3))) == headers(1) + headers(3)
    ops = core.upstream_data(h2.data_frame(1, b"a" * 8) + h2.data_frame(3, b"b" * 4))
    assert data_bytes(ops) == h2.data_frame(1, b"a" * 8) + h2.data_frame(3, b"b" * 4)
    # Stream 1 crosses byte 10 with this frame: reset instead of forwarding it.
    ops = core.upstream_data(h2.data_frame(1, b"a" * 8) + h2.data_frame(3, b"b" * 4))
    assert data_bytes(ops) == h2.rst_stream(1, h2.INTERNAL_ERROR) + h2.data_frame(3, b"b" * 4)
    injects = [op for op in ops if isinstance(op, Inject)]
    assert injects == [
        Inject(h2.rst_stream(1, h2.CANCEL), "upstream"),
        Inject(h2.window_update(0, 8), "upstream"),
    ]
    # Later frames of stream 1 are dropped (and credited); header blocks still pass.
    ops = core.upstream_data(h2.data_frame(1, b"c" * 5, h2.FLAG_END_STREAM) + headers(1))
    assert data_bytes(ops) == headers(1)
    assert Inject(h2.window_update(0, 5), "upstream") in ops
    assert [(f.kind, f.stream_id, f.offset, f.actual) for f in faults] == [
        ("reset_stream", 1, 10, 8)
    ]


def test_reset_stream_spares_a_stream_that_ends_before_its_offset() -> None:
    core, faults = h2_core("reset_stream:min_bytes=100,max_bytes=100")
    frames = headers(1) + h2.data_frame(1, b"x" * 50, h2.FLAG_END_STREAM)
    assert data_bytes(core.upstream_data(frames)) == frames
    assert faults == []


def test_stall_stream_drops_one_streams_data_while_others_flow() -> None:
    core, faults = h2_core("stall_stream:min_bytes=0,max_bytes=0,max_streams=1,duration=2000")
    ops = core.upstream_data(h2.data_frame(3, b"s" * 6))
    assert data_bytes(ops) == b""
    assert Inject(h2.window_update(0, 6), "upstream") in ops
    (later,) = [op for op in ops if isinstance(op, Later)]
    assert later.delay == 2.0
    assert Inject(h2.rst_stream(3, h2.INTERNAL_ERROR), "client") in later.ops
    ops = core.upstream_data(h2.data_frame(5, b"f" * 6) + h2.data_frame(3, b"s" * 6))
    assert data_bytes(ops) == h2.data_frame(5, b"f" * 6)
    assert [(f.kind, f.stream_id) for f in faults] == [("stall_stream", 3)]


def test_cut_data_sends_part_of_a_data_frame_then_closes() -> None:
    core, faults = h2_core("cut_data:min_bytes=5,max_bytes=5")
    line = b'{"response":"hello"}\n'
    ops = core.upstream_data(h2.data_frame(1, line))
    assert ops == [Data(h2.data_frame(1, line[:5])), Close()]
    assert (faults[0].offset, faults[0].detail) == (5, "mode=partial lines=0")
    assert core.upstream_data(h2.data_frame(1, line)) == []


def test_cut_data_torn_mode_sends_a_torn_frame() -> None:
    core, _ = h2_core("cut_data:min_bytes=3,max_bytes=3,torn=true")
    raw = h2.data_frame(1, b"abcdefgh")
    assert core.upstream_data(raw) == [Data(raw[: 9 + 3]), Close()]


def test_drop_after_data_frames_closes_after_n_frames() -> None:
    core, faults = h2_core("drop_after_data_frames:frames=2")
    frames = [h2.data_frame(1, b"%d" % i) for i in range(4)]
    ops = core.upstream_data(b"".join(frames))
    assert ops == [Data(frames[0] + frames[1]), Close()]
    assert faults[0].offset == 2


def test_goaway_sends_goaway_with_chosen_last_stream_then_closes() -> None:
    core, faults = h2_core("goaway:frames=1,last_stream_id=1")
    ops = core.upstream_data(headers(1) + headers(3) + h2.data_frame(3, b"x"))
    # Stream 3 is above last_stream_id: its frame is dropped, the GOAWAY goes out, then close.
    assert data_bytes(ops) == headers(1) + headers(3) + h2.goaway(1)
    assert Close() in ops
    assert faults[0].detail == "frames=1 last_stream_id=1"


def test_goaway_picks_last_stream_id_from_seed_among_open_streams() -> None:
    picks = set()
    for seed in range(30):
        core, faults = h2_core("goaway:frames=1", seed=seed)
        core.upstream_data(headers(1) + headers(3) + headers(5) + h2.data_frame(5, b"x"))
        picks.add(faults[0].detail)
        again, faults2 = h2_core("goaway:frames=1", seed=seed)
        again.upstream_data(headers(1) + headers(3) + headers(5) + h2.data_frame(5, b"x"))
        assert faults2[0].plan_key() == faults[0].plan_key()
    assert picks == {f"frames=1 last_stream_id={n}" for n in (0, 1, 3, 5)}


def test_stream_decisions_depend_on_stream_id_not_on_arrival_order() -> None:
    spec = "reset_stream:probability=0.5,min_bytes=0,max_bytes=50"

    def plan(order: list[int]) -> set[tuple[int, int]]:
        core, faults = h2_core(spec, seed=11)
        for _ in range(10):
            core.upstream_data(b"".join(h2.data_frame(s, b"y" * 7) for s in order))
        return {(f.stream_id, f.offset) for f in faults}

    forward = plan([1, 3, 5, 7, 9, 11, 13, 15])
    assert forward == plan([15, 13, 11, 9, 7, 5, 3, 1])
    assert 0 < len(forward) < 8


def test_stream_id_attribute_targets_one_stream() -> None:
    core, faults = h2_core("reset_stream:stream_id=3,min_bytes=0,max_bytes=0")
    core.upstream_data(h2.data_frame(1, b"a") + h2.data_frame(3, b"b") + h2.data_frame(5, b"c"))
    assert [f.stream_id for f in faults] == [3]


def test_h2_toxic_frames_split_across_reads_are_reassembled() -> None:
    core, _ = h2_core("reset_stream:probability=0")
    stream = headers(1) + h2.data_frame(1, b"q" * 30)
    out = b"".join(data_bytes(core.upstream_data(stream[i : i + 7])) for i in range(0, 60, 7))
    assert out == stream


def test_updating_a_toxic_swaps_attributes_and_keeps_its_state() -> None:
    core, _ = make_core("limit_data:bytes=10")
    assert core.upstream_data(b"123456") == [Data(b"123456")]
    core.update_toxic(to_spec("limit_data:bytes=8"))
    assert core.upstream_data(b"7890") == [Data(b"78"), Close()]


def test_goaway_with_close_delay_lets_kept_streams_flow_until_the_close() -> None:
    core, _ = h2_core("goaway:frames=1,last_stream_id=1,close_delay=250")
    ops = core.upstream_data(headers(1) + headers(3) + h2.data_frame(1, b"a"))
    assert data_bytes(ops) == headers(1) + headers(3) + h2.data_frame(1, b"a") + h2.goaway(1)
    assert Later(0.25, [Close()]) in ops
    ops = core.upstream_data(h2.data_frame(1, b"b") + h2.data_frame(3, b"c"))
    assert data_bytes(ops) == h2.data_frame(1, b"b")
    assert Inject(h2.window_update(0, 1), "upstream") in ops
