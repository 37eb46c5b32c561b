"""Adaptive idle timeout: follows the pace, clamps, warms up, decays (no sockets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilient_stream.buffering import IdleTimeoutPolicy


def test_cap_applies_until_warmed_up() -> None:
    p = IdleTimeoutPolicy(cap=30.0, warmup=4)
    for _ in range(3):
        p.observe(0.02)
    assert p.timeout == 30.0
    p.observe(0.02)
    assert p.timeout < 1.0


def test_fast_stream_is_caught_well_under_a_second_but_not_below_the_floor() -> None:
    p = IdleTimeoutPolicy(cap=30.0, floor=0.25, factor=8.0)
    for _ in range(50):
        p.observe(0.02)  # 50 tokens/s
    assert p.timeout == 0.25
    q = IdleTimeoutPolicy(cap=30.0, floor=0.25, factor=8.0)
    for _ in range(50):
        q.observe(0.05)
    assert abs(q.timeout - 0.4) < 1e-9


def test_slow_model_is_not_mistaken_for_a_dead_stream() -> None:
    p = IdleTimeoutPolicy(cap=30.0, factor=8.0)
    for _ in range(20):
        p.observe(0.5)  # 2 tokens/s
    assert p.timeout == 4.0


def test_one_slow_gap_raises_the_bar_at_once_and_it_decays_back() -> None:
    p = IdleTimeoutPolicy(cap=30.0, floor=0.1, factor=4.0, decay=0.9)
    for _ in range(20):
        p.observe(0.05)
    p.observe(1.0)
    assert p.timeout == 4.0
    for _ in range(100):
        p.observe(0.05)
    assert p.timeout < 0.25


def test_timeout_never_exceeds_the_cap() -> None:
    p = IdleTimeoutPolicy(cap=2.0, warmup=1)
    p.observe(10.0)
    assert p.timeout == 2.0


def test_reset_starts_a_new_warmup_and_disabled_uses_the_cap() -> None:
    p = IdleTimeoutPolicy(cap=5.0, warmup=2)
    p.observe(0.01)
    p.observe(0.01)
    assert p.timeout < 5.0
    p.reset()
    assert p.timeout == 5.0
    off = IdleTimeoutPolicy(cap=5.0, warmup=1, enabled=False)
    off.observe(0.01)
    assert off.timeout == 5.0


def test_warmup_timeout_catches_an_early_stall_of_a_fast_stream() -> None:
    """Issue 10 item 9: a stall after two chunks of a 45 tokens/s stream waited the
    whole 30 s cap; with a warm-up timeout it is caught within it."""
    p = IdleTimeoutPolicy(cap=30.0, factor=10.0, warmup_timeout=5.0)
    assert p.timeout == 5.0  # after the first chunk, before any gap
    p.observe(1 / 45)
    assert p.timeout == 5.0


def test_warmup_timeout_never_kills_a_slow_but_healthy_stream() -> None:
    p = IdleTimeoutPolicy(cap=30.0, factor=10.0, warmup_timeout=5.0)
    assert p.timeout > 2.0  # 0.5 tokens/s: the first gap (2 s) fits under the warm-up bar
    p.observe(2.0)
    assert p.timeout == 20.0  # and one gap raises the bar to factor x the gap
    for _ in range(20):
        p.observe(2.0)
    assert p.timeout == 20.0


class _ReferencePolicy:
    """observe() as first written (before its per-record path was trimmed)."""

    def __init__(
        self,
        cap: float,
        floor: float,
        factor: float,
        warmup: int,
        decay: float,
        enabled: bool,
        warmup_timeout: float | None,
    ) -> None:
        self.cap, self.floor, self.factor = cap, min(floor, cap), factor
        self.early = cap if warmup_timeout is None else min(warmup_timeout, cap)
        self.warmup, self.decay, self.enabled = warmup, decay, enabled
        self.peak, self.seen = 0.0, 0

    def observe(self, gap: float) -> float:
        self.peak = max(gap, self.peak * self.decay)
        self.seen += 1
        if not self.enabled:
            return self.cap
        t = self.factor * self.peak
        if self.seen < self.warmup:
            t = max(t, self.early)
        return min(max(t, self.floor), self.cap)


@given(
    gaps=st.lists(st.floats(0.0, 40.0), max_size=40),
    cap=st.floats(0.5, 30.0),
    floor=st.floats(0.0, 2.0),
    factor=st.floats(1.0, 10.0),
    warmup=st.integers(0, 10),
    enabled=st.booleans(),
    warmup_timeout=st.none() | st.floats(0.1, 40.0),
)
def test_observe_answers_as_the_policy_reads(
    gaps: list[float],
    cap: float,
    floor: float,
    factor: float,
    warmup: int,
    enabled: bool,
    warmup_timeout: float | None,
) -> None:
    kw = {"cap": cap, "floor": floor, "factor": factor, "warmup": warmup, "decay": 0.99}
    p = IdleTimeoutPolicy(**kw, enabled=enabled, warmup_timeout=warmup_timeout)
    ref = _ReferencePolicy(**kw, enabled=enabled, warmup_timeout=warmup_timeout)
    for gap in gaps:
        t = p.observe(gap)
        assert t == ref.observe(gap)
        assert p.timeout == t
