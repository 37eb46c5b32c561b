"""The reference server's pacing (sans-I/O): each stream on its own clock, or all on
one (``batch_steps``, as a batched decoder emits one token of every stream a step)."""

from __future__ import annotations

import math

import pytest

from resilient_stream.refserver.settings import ServerSettings
from resilient_stream.refserver.streaming import Pacing


def pacing(**kw: object) -> Pacing:
    return Pacing(ServerSettings(**kw))  # type: ignore[arg-type]


def test_own_clocks_count_each_streams_gaps_from_its_own_start() -> None:
    p = pacing(tokens_per_second=10)
    a, b = p.first_due(100.003), p.first_due(100.047)
    assert (a, b) == (100.003, 100.047)
    assert p.next_due(a, a) == pytest.approx(100.103)


@pytest.mark.parametrize("base", [3.1, 12345.678, 86400.5])  # loop time: since boot
@pytest.mark.parametrize("rate", [7.0, 10.0, 20.0, 33.3, 50.0])
def test_batch_steps_put_streams_that_started_apart_on_the_same_steps(
    rate: float, base: float
) -> None:
    p = pacing(tokens_per_second=rate, batch_steps=True, first_token_delay=0.1)
    gap = 1.0 / rate
    starts = [base + 0.0137 * i for i in range(6)]  # within one gap of each other or not
    dues = [p.first_due(t) for t in starts]
    for start, due in zip(starts, dues, strict=True):
        assert due >= start + 0.1 - 1e-6 * gap  # never before its first-token delay...
        assert due < start + 0.1 + gap  # ...and at most one step later
    for _ in range(500):  # float error accumulates over a long stream: no step skipped
        nxt = [p.next_due(d, d) for d in dues]
        for d, n in zip(dues, nxt, strict=True):
            assert n - d == pytest.approx(gap, rel=1e-6)
            assert abs(n / gap - round(n / gap)) < 1e-6  # on a step
        dues = nxt
    assert len({round(d / gap) for d in dues}) <= math.ceil(0.0137 * 5 / gap) + 1


def test_a_stream_that_fell_behind_goes_on_from_now_on_the_next_step() -> None:
    p = pacing(tokens_per_second=10, batch_steps=True)
    late = p.next_due(5.0, 9.0)  # due at 5.1, the loop came back at 9.0: no burst of 39
    assert late == pytest.approx(9.0)
    assert p.next_due(late, 9.0) == pytest.approx(9.1)


def test_batch_steps_refuse_jitter_rather_than_slow_down() -> None:
    with pytest.raises(ValueError, match="one or the other"):
        ServerSettings(tokens_per_second=10, batch_steps=True, jitter=0.2)


def test_unpaced_streams_have_no_steps() -> None:
    p = pacing(tokens_per_second=0, batch_steps=True)
    assert not p.steps and p.first_due(3.25) == 3.25
