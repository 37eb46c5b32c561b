"""Sans-I/O flow-control window decisions (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_stream.h2wire import MAX_WINDOW
from resilient_stream.transport.windows import ReceiveWindow


def test_no_window_update_until_a_quarter_of_the_window_is_consumed() -> None:
    w = ReceiveWindow(1000)
    assert w.consumed(249) == 0
    assert w.pending == 249
    assert w.consumed(1) == 250
    assert w.pending == 0


def test_flush_grants_everything_consumed_so_far() -> None:
    w = ReceiveWindow(1000)
    w.consumed(10)
    assert w.flush() == 10
    assert w.flush() == 0


def test_growing_the_window_grants_the_difference_at_once() -> None:
    w = ReceiveWindow(1000)
    assert w.resize(3000) == 2000
    assert w.size == 3000


def test_shrinking_the_window_withholds_later_increments() -> None:
    w = ReceiveWindow(1000)
    assert w.resize(600) == 0
    # 400 bytes of credit must be withheld before anything is granted again.
    assert w.consumed(500) == 100
    assert w.consumed(300) == 300


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        ReceiveWindow(0)
    with pytest.raises(ValueError):
        ReceiveWindow(MAX_WINDOW + 1)


@given(st.lists(st.integers(min_value=0, max_value=70_000), max_size=200))
def test_sender_credit_never_exceeds_the_window(reads: list[int]) -> None:
    """Model a sender: it may have at most ``credit`` bytes in flight; we never over-grant."""
    size = 65_536
    w = ReceiveWindow(size)
    credit = size  # what the sender may still send
    buffered = 0
    for n in reads:
        sent = min(n, credit)
        credit -= sent
        buffered += sent
        credit += w.consumed(sent)  # consumer reads everything buffered
        buffered = 0
        assert 0 <= credit <= size
    credit += w.flush()
    assert credit == size
