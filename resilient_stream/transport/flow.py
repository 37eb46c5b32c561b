"""Flow control: crediting windows and applying the adaptive sizing decisions.

The decisions are sans-I/O (``resilient_stream.buffering``): ``BdpEstimator``
(PING probes on DATA, gRPC style), ``WindowSizing`` (connection and stream window
targets) and ``ConsumerBudget`` (how much may wait unread per stream). This mixin
is the I/O edge that applies them: it sends the probe PINGs and the
WINDOW_UPDATEs. Per read it costs a counter update and a clock read; a sizing
decision runs at most once per ``EVAL_INTERVAL`` per stream.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import h2.exceptions

from ..buffering.consumer import ConsumerBudget
from ..buffering.sizing import EVAL_INTERVAL
from .receive import BDP_PING
from .stream import H2Stream

if TYPE_CHECKING:
    from ..buffering.bdp import BdpEstimator
    from ..buffering.sizing import WindowSizing
    from .h2setup import DrainingH2Connection
    from .keepalive import PingKeepalive
    from .windows import ReceiveWindow


class FlowControl:
    """Mixin of :class:`~.connection.H2ClientConnection`: receive windows."""

    if TYPE_CHECKING:
        loop: asyncio.AbstractEventLoop
        streams: dict[int, H2Stream]
        closed: bool
        _h2: DrainingH2Connection
        _keepalive: PingKeepalive
        _conn_window: ReceiveWindow
        _bdp: BdpEstimator | None
        _sizing: WindowSizing | None
        _budget: ConsumerBudget | None

        def _flush(self) -> None: ...

    def stream_data_consumed(self, s: H2Stream, n: int) -> None:
        """The consumer took ``n`` flow-controlled bytes (all that waited): reopen its window?"""
        if s.stream_id not in self.streams:
            return  # stream over: nothing more will come on it
        if self._sizing is not None:
            self._consumer_read(s, n)
        increment = s.window.consumed(n)
        if increment:
            try:
                self._h2.increment_flow_control_window(increment, stream_id=s.stream_id)
            except h2.exceptions.ProtocolError:
                return
            self._flush()

    def _consumer_read(self, s: H2Stream, n: int) -> None:
        now = self.loop.time()
        if s.eval_at == 0.0:  # first read: time to first token is not a pace
            s.eval_at = now
            return
        s.read_bytes += n
        elapsed = now - s.eval_at
        if elapsed >= EVAL_INTERVAL:
            self._adapt_stream(s, now, elapsed)
        budget = self._budget
        if budget is not None and n > budget.floor:
            cut = budget.lagging(n, s.rate, self.rtt or 0.0, s.window.size)
            if cut:
                s.window.resize(cut)  # a shrink: later credit is withheld

    def _adapt_stream(self, s: H2Stream, now: float, elapsed: float) -> None:
        sizing = self._sizing
        assert sizing is not None
        bdp = self._bdp
        read = s.read_bytes
        s.rate = ConsumerBudget.smooth_rate(s.rate, read, elapsed)
        target = sizing.stream_target(
            s.window.size, read, elapsed, self.rtt or 0.0, bdp.bdp if bdp is not None else 0
        )
        s.read_bytes = 0
        s.eval_at = now
        if target != s.window.size:
            self.set_stream_window(s, target)

    def start_window(self, s: H2Stream) -> None:
        """A new stream starts from the connection's estimate (not the SETTINGS default)."""
        sizing = self._sizing
        if sizing is None:
            return
        bdp = self._bdp
        start = sizing.stream_start(bdp.bdp if bdp is not None else 0)
        if start != s.window.size:
            self.set_stream_window(s, start)

    def set_stream_window(self, s: H2Stream, size: int) -> None:
        """Resize one stream's receive window.

        Growing sends the difference at once; shrinking withholds later credit
        (HTTP/2 cannot take credit back).
        """
        increment = s.window.resize(size)
        if increment and s.stream_id in self.streams:
            try:
                self._h2.increment_flow_control_window(increment, stream_id=s.stream_id)
            except h2.exceptions.ProtocolError:
                return
            self._flush()

    def set_connection_window(self, size: int) -> None:
        """Resize the connection's receive window."""
        increment = self._conn_window.resize(size)
        if increment and not self.closed:
            self._h2.increment_flow_control_window(increment)
            self._flush()

    @property
    def rtt(self) -> float | None:
        """Round-trip time: smoothed BDP probes, else the last keepalive PING, else None."""
        bdp = self._bdp
        if bdp is not None and bdp.rtt > 0.0:
            return bdp.rtt
        return self._keepalive.rtt

    @property
    def connection_window(self) -> int:
        """The connection's receive window size now."""
        return self._conn_window.size

    @property
    def bdp(self) -> int:
        """The connection's bandwidth-delay product estimate (0: not measured)."""
        return self._bdp.bdp if self._bdp is not None else 0

    def _send_bdp_probe(self) -> None:
        bdp = self._bdp
        assert bdp is not None
        if self.closed:
            bdp.cancel()
            return
        try:
            self._h2.ping(BDP_PING)
        except h2.exceptions.ProtocolError:
            bdp.cancel()

    def _bdp_acked(self) -> None:
        bdp = self._bdp
        if bdp is None:
            return
        grown = bdp.on_ack(self.loop.time())
        sizing = self._sizing
        if grown and sizing is not None:
            target = sizing.connection_target(grown)
            if target > self._conn_window.size:
                self.set_connection_window(target)
