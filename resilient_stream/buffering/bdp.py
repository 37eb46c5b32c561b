"""Bandwidth-delay product estimation per connection (sans-I/O), after gRPC's.

gRPC (``internal/transport/bdp_estimator.go``) measures the link with the data
itself: on a DATA read when no probe is in flight, it sends a PING and counts the
DATA bytes that arrive until the ACK. Those bytes are what the link carried in one
round trip, so the bandwidth-delay product is about that ``sample``; the window is
set to ``gamma`` (2) x ``sample`` whenever the sample fills at least ``beta`` (2/3)
of the current estimate *and* the sample's bandwidth is the highest seen (so a
slow round trip never inflates it), capped at ``limit``.

Two changes from gRPC, both for token streams on a fast loopback: probes are at
least ``min_interval`` apart (gRPC probes on every burst, which on a 50 us loopback
would be a PING per read), and the estimate never shrinks (like gRPC's): windows
shrink per stream instead (sizing.py), where the consumer's pace is known.

The caller owns the clock and the socket: it calls :meth:`on_data` once per read
with the DATA bytes of that read, sends a PING when told to, and calls
:meth:`on_ack` when that PING's ACK arrives.
"""

from __future__ import annotations

#: gRPC's cap on the BDP-driven window (16 MiB).
DEFAULT_LIMIT = 16 * 1024 * 1024
_BETA = 0.66
_GAMMA = 2
_ALPHA = 0.9  # RTT smoothing once ten samples were seen


class BdpEstimator:
    """Round-trip time, bandwidth and BDP of one connection, from PING probes."""

    __slots__ = (
        "_in_flight",
        "_sample",
        "_samples",
        "_sent_at",
        "bandwidth",
        "bdp",
        "limit",
        "min_interval",
        "rtt",
    )

    def __init__(
        self, *, limit: int = DEFAULT_LIMIT, min_interval: float = 0.05, initial: int = 0
    ) -> None:
        self.limit = limit
        self.min_interval = min_interval
        #: Current estimate (bytes); 0 until a probe measured something.
        self.bdp = min(initial, limit)
        #: Smoothed round-trip time of the probes (seconds); 0.0 until measured.
        self.rtt = 0.0
        #: Highest bandwidth a probe saw (bytes/s).
        self.bandwidth = 0.0
        self._in_flight = False
        self._sample = 0
        self._samples = 0
        self._sent_at = float("-inf")

    def on_data(self, n: int, now: float) -> bool:
        """``n`` DATA bytes arrived in one read. True: send a probe PING now."""
        if self._in_flight:
            self._sample += n
            return False
        if self.bdp >= self.limit or now - self._sent_at < self.min_interval:
            return False
        self._in_flight = True
        self._sample = n  # gRPC counts the read that triggers the probe
        self._sent_at = now
        return True

    def cancel(self) -> None:
        """The probe could not be sent: allow the next read to try again."""
        self._in_flight = False
        self._sent_at = float("-inf")

    @property
    def probing(self) -> bool:
        return self._in_flight

    def on_ack(self, now: float) -> int:
        """The probe's ACK arrived. Returns the new, larger BDP, or 0 if it did not grow."""
        if not self._in_flight:
            return 0
        self._in_flight = False
        rtt_sample = max(now - self._sent_at, 1e-6)
        self._samples += 1
        if self._samples < 10:
            self.rtt += (rtt_sample - self.rtt) / self._samples
        else:
            self.rtt += (rtt_sample - self.rtt) * _ALPHA
        sample = self._sample
        bandwidth = sample / (self.rtt * 1.5)
        if bandwidth > self.bandwidth:
            self.bandwidth = bandwidth
        if sample >= _BETA * self.bdp and bandwidth == self.bandwidth and self.bdp < self.limit:
            grown = min(_GAMMA * sample, self.limit)
            if grown > self.bdp:
                self.bdp = grown
                return grown
        return 0
