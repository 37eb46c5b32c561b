"""Flow control of one connection: its receive windows and what sizes them (sans-I/O).

The sizing decisions live in ``resilient_stream.buffering``: ``BdpEstimator``
(PING probes on DATA, gRPC style), ``WindowSizing`` (connection and stream
window targets) and ``ConsumerBudget`` (how much may wait unread per stream).
:class:`FlowControl` keeps the windows and applies those decisions; every
method returns the credit to grant now (0: none), which the core sends as a
WINDOW_UPDATE. The connection window is credited as bytes arrive (the core
calls ``connection.consumed`` per read, and ``bdp.on_data`` for the probes); a
stream's window as its consumer reads. Per read that is a counter update; a
sizing decision runs at most once per ``EVAL_INTERVAL`` per stream.
"""

from __future__ import annotations

from ..buffering.bdp import BdpEstimator
from ..buffering.consumer import ConsumerBudget
from ..buffering.sizing import EVAL_INTERVAL
from ..h2wire import DEFAULT_WINDOW
from .h2setup import ConnectionSettings
from .keepalive import Keepalive
from .stream import H2Stream
from .windows import ReceiveWindow


class FlowControl:
    """The connection's receive window, the streams' windows, and the BDP estimate."""

    __slots__ = ("_keepalive", "bdp", "budget", "connection", "sizing")

    def __init__(self, settings: ConnectionSettings, keepalive: Keepalive) -> None:
        #: The connection window: credited on receipt, so one slow consumer never
        #: starves the other streams (windows.py).
        self.connection = ReceiveWindow(max(settings.connection_window, DEFAULT_WINDOW))
        self.sizing = settings.sizing  # adaptive windows (None: fixed)
        self.budget = settings.budget
        self.bdp: BdpEstimator | None = (
            BdpEstimator(limit=settings.sizing.cap)
            if settings.sizing is not None and settings.bdp_probe
            else None
        )
        self._keepalive = keepalive  # its PINGs measure the RTT until the probes do

    @property
    def rtt(self) -> float | None:
        """Round-trip time: smoothed BDP probes, else the last keepalive PING, else None."""
        bdp = self.bdp
        if bdp is not None and bdp.rtt > 0.0:
            return bdp.rtt
        return self._keepalive.rtt

    # --- the connection window ------------------------------------------------------

    def probe_lost(self) -> None:
        """The probe PING could not be sent."""
        if self.bdp is not None:
            self.bdp.cancel()

    def probe_acked(self, now: float) -> int:
        """The probe's ACK arrived: connection credit to grant if the BDP estimate grew."""
        bdp = self.bdp
        if bdp is None:
            return 0
        grown = bdp.on_ack(now)
        sizing = self.sizing
        if grown and sizing is not None:
            target = sizing.connection_target(grown)
            if target > self.connection.size:
                return self.connection.resize(target)
        return 0

    def resize_connection(self, size: int) -> int:
        return self.connection.resize(size)

    # --- stream windows -------------------------------------------------------------------

    def stream_opened(self, s: H2Stream) -> int:
        """A new stream starts from the connection's estimate (not the SETTINGS default)."""
        sizing = self.sizing
        if sizing is None:
            return 0
        bdp = self.bdp
        start = sizing.stream_start(bdp.bdp if bdp is not None else 0)
        return s.window.resize(start) if start != s.window.size else 0

    def stream_read(self, s: H2Stream, n: int, now: float) -> int:
        """The consumer took ``n`` flow-controlled bytes (all that waited): stream credit."""
        if self.sizing is not None:
            return self._consumer_read(s, n, now) + s.window.consumed(n)
        return s.window.consumed(n)

    def resize_stream(self, s: H2Stream, size: int) -> int:
        """Growing grants the difference at once; shrinking withholds later credit
        (HTTP/2 cannot take credit back)."""
        return s.window.resize(size)

    def _consumer_read(self, s: H2Stream, n: int, now: float) -> int:
        """Adaptive sizing on the read path: returns the credit a grown window adds."""
        if s.eval_at == 0.0:  # first read: time to first token is not a pace
            s.eval_at = now
            return 0
        s.read_bytes += n
        elapsed = now - s.eval_at
        grown = 0
        if elapsed >= EVAL_INTERVAL:
            grown = self._adapt_stream(s, now, elapsed, self.rtt or 0.0)
        budget = self.budget
        if budget is not None and n > budget.floor:
            cut = budget.lagging(n, s.rate, self.rtt or 0.0, s.window.size)
            if cut:
                s.window.resize(cut)  # a shrink: later credit is withheld
        return grown

    def _adapt_stream(self, s: H2Stream, now: float, elapsed: float, rtt: float) -> int:
        sizing = self.sizing
        assert sizing is not None
        bdp = self.bdp
        read = s.read_bytes
        s.rate = ConsumerBudget.smooth_rate(s.rate, read, elapsed)
        target = sizing.stream_target(
            s.window.size, read, elapsed, rtt, bdp.bdp if bdp is not None else 0
        )
        s.read_bytes = 0
        s.eval_at = now
        return s.window.resize(target) if target != s.window.size else 0
