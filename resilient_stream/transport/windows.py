"""Receive flow-control window decisions, sans-I/O (modelled on ``h2/windows.py``).

HTTP/2 lets a receiver bound what a sender may have in flight, per stream and per
connection. We keep the two apart on purpose:

* the **connection** window is credited as soon as bytes arrive, so one slow
  consumer never starves the other streams sharing the connection;
* a **stream** window is credited only as its consumer reads, so a consumer that
  stops reading stops its own stream (memory bounded by the window) and nothing
  else.

:class:`ReceiveWindow` only counts bytes and says when a WINDOW_UPDATE is worth
sending: after a quarter of the window, as gRPC does. Half a window (h2's
choice) keeps the frame count lower, but leaves the sender idle for a quarter of
each window on average; on a long link that held a stream at 60-75% of the
rate the window allowed, and the BDP estimator (which grows only when a round
trip's sample fills 2/3 of its estimate) never saw enough bytes to grow out of
it (bench/bench_buffering.py --only link). The caller sends it.
:meth:`ReceiveWindow.resize` is the hook the adaptive sizing (buffering/) uses to
grow or shrink a window.
"""

from __future__ import annotations

from ..h2wire import MAX_WINDOW


class ReceiveWindow:
    """Counts consumed bytes of one receive window; returns the increments to grant."""

    __slots__ = ("_pending", "_shrink", "_threshold", "size")

    def __init__(self, size: int) -> None:
        if not 1 <= size <= MAX_WINDOW:
            raise ValueError(f"window size must be in 1..{MAX_WINDOW}, got {size}")
        self.size = size
        self._pending = 0  # consumed bytes not yet granted back
        self._shrink = 0  # bytes to withhold after a resize() made the window smaller
        self._threshold = max(size // 4, 1)

    @property
    def pending(self) -> int:
        """Bytes consumed but not yet granted back to the sender."""
        return self._pending

    def consumed(self, n: int) -> int:
        """``n`` bytes were used up (received or read); return the increment to send (0: none)."""
        pending = self._pending + n
        if pending < self._threshold:
            self._pending = pending
            return 0
        self._pending = 0
        if self._shrink:
            withheld = min(self._shrink, pending)
            self._shrink -= withheld
            pending -= withheld
        return pending

    def flush(self) -> int:
        """Grant everything consumed so far now (e.g. before the peer could block)."""
        pending, self._pending = self._pending, 0
        return pending

    def resize(self, new_size: int) -> int:
        """Change the window size. Returns an immediate increment when it grows.

        A smaller window is reached by withholding later increments (HTTP/2 cannot
        take credit back).
        """
        if not 1 <= new_size <= MAX_WINDOW:
            raise ValueError(f"window size must be in 1..{MAX_WINDOW}, got {new_size}")
        delta = new_size - self.size
        self.size = new_size
        self._threshold = max(new_size // 4, 1)
        if delta > 0:
            cancel = min(delta, self._shrink)
            self._shrink -= cancel
            return delta - cancel
        self._shrink -= delta
        return 0
