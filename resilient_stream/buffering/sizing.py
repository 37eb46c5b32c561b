"""Receive-window targets for a connection and its streams (sans-I/O).

A fixed window is wrong at both ends: 64 KiB caps a stream at ``64 KiB / RTT``
(5 Mbit/s over 100 ms), while stock httpcore's 16 MiB lets every stalled
consumer hold 16 MiB. Here windows follow what is measured:

* **connection**: at least the configured ``connection_window``, grown to twice
  the connection's BDP (bdp.py) so every stream together can fill the link. We
  credit it on receipt, so it bounds bytes on the wire, never memory.
* **stream**: like Linux's receive-buffer autotuning (``tcp_rcv_space_adjust``):
  about once per :data:`EVAL_INTERVAL`, the window becomes twice the bytes the
  *consumer read* per round trip, within ``[floor, min(cap, connection BDP)]``.
  A stream whose consumer keeps the window busy doubles it each round; a token
  stream (a few KB/s) stays at the floor; one that goes quiet or whose consumer
  slows down shrinks back (only by 2x or more, so a burst does not flap it).
  Growth follows the consumer, so a consumer that stopped reading never gets a
  larger window, whatever the link can do.
* **new stream**: starts from the connection's current BDP (a new bulk stream on
  a measured long link does not crawl up from 64 KiB), or ``initial`` before any
  estimate.
"""

from __future__ import annotations

from ..h2wire import MAX_WINDOW

#: Seconds of reads between two decisions for one stream (at least one RTT).
EVAL_INTERVAL = 0.1


class WindowSizing:
    """The window policy of one transport (shared by its connections)."""

    __slots__ = ("cap", "connection_floor", "floor", "initial")

    def __init__(self, *, floor: int, cap: int, initial: int, connection_floor: int) -> None:
        self.floor = max(1, min(floor, MAX_WINDOW))
        self.cap = max(self.floor, min(cap, MAX_WINDOW))
        self.initial = initial
        self.connection_floor = connection_floor

    def connection_target(self, bdp: int) -> int:
        """Connection window for a connection whose BDP estimate is ``bdp``."""
        return min(max(self.connection_floor, 2 * bdp), MAX_WINDOW)

    def stream_start(self, bdp: int) -> int:
        """Window of a new stream on a connection whose BDP estimate is ``bdp`` (0: none)."""
        want = bdp if bdp > 0 else self.initial
        return min(max(want, self.floor), self.cap)

    def stream_target(self, window: int, read: int, elapsed: float, rtt: float, bdp: int) -> int:
        """Next window of a stream whose consumer read ``read`` bytes in ``elapsed`` s.

        ``rtt`` and ``bdp`` are the connection's estimates (0: not measured yet: keep
        the window). Returns ``window`` when nothing should change.
        """
        if rtt <= 0.0 or elapsed <= 0.0:
            return window
        want = int(2 * read * rtt / elapsed)
        if want > window:
            upper = min(self.cap, max(self.floor, bdp))
            return max(window, min(want, upper))
        if 4 * want < window:
            return max(self.floor, 2 * want, window // 2)
        return window
