"""Adaptive buffering decisions, sans-I/O: BDP estimation, window sizing, consumer budget."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilient_stream.buffering import BdpEstimator, ConsumerBudget, WindowSizing

KIB = 1024
MIB = 1024 * 1024


def sizing(**kw: int) -> WindowSizing:
    args = {"floor": 64 * KIB, "cap": 16 * MIB, "initial": 256 * KIB, "connection_floor": MIB}
    args.update(kw)
    return WindowSizing(**args)


# --- BDP estimator ------------------------------------------------------------------


def probe(est: BdpEstimator, now: float, rtt: float, reads: list[int]) -> int:
    """One probe: the first read triggers it, the others arrive before its ACK."""
    assert est.on_data(reads[0], now)
    for n in reads[1:]:
        assert not est.on_data(n, now + rtt / 2)
    return est.on_ack(now + rtt)


def test_bdp_is_twice_the_bytes_received_during_a_probe_round_trip() -> None:
    est = BdpEstimator(min_interval=0.0)
    assert probe(est, 0.0, 0.1, [16 * KIB] * 4) == 2 * 64 * KIB
    assert est.bdp == 128 * KIB
    assert abs(est.rtt - 0.1) < 1e-9


def test_only_one_probe_is_in_flight_and_probes_are_spaced() -> None:
    est = BdpEstimator(min_interval=0.05)
    assert est.on_data(100, 0.0)
    assert not est.on_data(100, 0.01)  # in flight: counted, no second probe
    est.on_ack(0.02)
    assert not est.on_data(100, 0.03)  # ACKed, but too soon after the last probe
    assert est.on_data(100, 0.06)


def test_bdp_grows_on_a_long_fat_link_until_the_cap() -> None:
    est = BdpEstimator(limit=4 * MIB, min_interval=0.0)
    window = 64 * KIB
    now = 0.0
    rounds = 0
    while est.bdp < 4 * MIB and rounds < 20:  # the sender fills the window each round trip
        grown = probe(est, now, 0.1, [window])
        if grown:
            window = grown
        now += 0.2
        rounds += 1
    assert est.bdp == 4 * MIB
    assert rounds == 6  # 64 KiB doubling: 128K, 256K, 512K, 1M, 2M, 4M
    assert not est.on_data(window, now)  # at the cap: no more probes


def test_a_slow_round_trip_does_not_inflate_the_estimate() -> None:
    est = BdpEstimator(min_interval=0.0)
    probe(est, 0.0, 0.01, [100 * KIB])
    before = est.bdp
    # Same bytes over a much longer round trip: lower bandwidth, no growth.
    assert probe(est, 1.0, 1.0, [100 * KIB]) == 0
    assert est.bdp == before


def test_a_probe_that_could_not_be_sent_can_be_retried_at_once() -> None:
    est = BdpEstimator(min_interval=10.0)
    assert est.on_data(1, 0.0)
    est.cancel()
    assert est.on_data(1, 0.001)


# --- window sizing ------------------------------------------------------------------


def test_stream_window_doubles_while_the_consumer_reads_a_full_window_per_round_trip() -> None:
    s = sizing()
    window = 64 * KIB
    for _ in range(3):
        window = s.stream_target(window, read=window, elapsed=0.1, rtt=0.1, bdp=8 * MIB)
    assert window == 8 * 64 * KIB


def test_stream_window_is_capped_by_the_connection_bdp_and_the_configured_cap() -> None:
    s = sizing(cap=2 * MIB)
    assert s.stream_target(MIB, read=4 * MIB, elapsed=0.1, rtt=0.1, bdp=1536 * KIB) == 1536 * KIB
    assert s.stream_target(MIB, read=64 * MIB, elapsed=0.1, rtt=0.1, bdp=64 * MIB) == 2 * MIB


def test_stream_window_shrinks_back_when_the_stream_goes_quiet_but_not_below_the_floor() -> None:
    s = sizing()
    window = 8 * MIB
    shrunk = s.stream_target(window, read=10 * KIB, elapsed=5.0, rtt=0.1, bdp=8 * MIB)
    assert 64 * KIB <= shrunk < window
    for _ in range(10):
        shrunk = s.stream_target(shrunk, read=0, elapsed=1.0, rtt=0.1, bdp=8 * MIB)
    assert shrunk == 64 * KIB


def test_a_token_stream_stays_at_the_floor() -> None:
    s = sizing()
    # 50 tokens/s of ~100 bytes for 1 s on a 100 ms link.
    assert s.stream_target(64 * KIB, read=5000, elapsed=1.0, rtt=0.1, bdp=8 * MIB) == 64 * KIB


def test_a_consumer_reading_a_bit_below_the_window_does_not_flap_it() -> None:
    s = sizing()
    w = MIB
    assert s.stream_target(w, read=400 * KIB, elapsed=0.1, rtt=0.1, bdp=8 * MIB) == w


def test_without_an_rtt_the_window_is_kept() -> None:
    assert sizing().stream_target(64 * KIB, read=MIB, elapsed=0.1, rtt=0.0, bdp=0) == 64 * KIB


def test_new_streams_start_from_the_connection_estimate_not_the_default() -> None:
    s = sizing()
    assert s.stream_start(0) == 256 * KIB  # nothing measured yet: the configured start
    assert s.stream_start(4 * MIB) == 4 * MIB
    assert s.stream_start(1000) == 64 * KIB  # floor
    assert s.stream_start(64 * MIB) == 16 * MIB  # cap


def test_connection_window_is_twice_the_bdp_never_below_the_configured_window() -> None:
    s = sizing(connection_floor=MIB)
    assert s.connection_target(100 * KIB) == MIB
    assert s.connection_target(4 * MIB) == 8 * MIB


@given(
    window=st.integers(min_value=64 * KIB, max_value=16 * MIB),
    read=st.integers(min_value=0, max_value=1 << 30),
    elapsed=st.floats(min_value=1e-3, max_value=100.0),
    rtt=st.floats(min_value=0.0, max_value=2.0),
    bdp=st.integers(min_value=0, max_value=1 << 30),
)
def test_stream_target_stays_within_floor_and_cap(
    window: int, read: int, elapsed: float, rtt: float, bdp: int
) -> None:
    t = sizing().stream_target(window, read, elapsed, rtt, bdp)
    assert 64 * KIB <= t <= 16 * MIB


# --- consumer budget ----------------------------------------------------------------


def test_consumer_budget_is_its_throughput_times_the_target_latency() -> None:
    b = ConsumerBudget(target_latency=0.25, floor=64 * KIB, cap=16 * MIB)
    assert b.limit(rate=4 * MIB, rtt=0.01) == MIB
    assert b.limit(rate=1000, rtt=0.01) == 64 * KIB  # floor
    assert b.limit(rate=4 * MIB, rtt=0.5) == 4 * MIB  # never under two round trips


def test_a_consumer_that_keeps_up_is_not_lagging_one_that_falls_behind_is() -> None:
    b = ConsumerBudget(target_latency=0.25, floor=64 * KIB, cap=16 * MIB)
    window = 4 * MIB
    assert b.lagging(queued=16 * KIB, rate=MIB, rtt=0.01, window=window) == 0
    # One socket read's worth waiting is not lag, even above the budget.
    assert b.lagging(queued=512 * KIB, rate=MIB, rtt=0.01, window=window) == 0
    # Most of the window left unread: cut to a quarter second of this consumer's pace.
    assert b.lagging(queued=4 * MIB, rate=MIB, rtt=0.01, window=window) == 256 * KIB


def test_consumer_rate_is_smoothed() -> None:
    r = ConsumerBudget.smooth_rate(0.0, 1000, 1.0)
    assert r == 1000.0
    assert ConsumerBudget.smooth_rate(r, 3000, 1.0) == 2000.0
