"""Consumer-side buffering per stream (sans-I/O): how much may wait for a reader.

Bytes received for a stream wait in the transport until its consumer reads them,
and a stream's flow-control window is replenished only as it reads (the
connection's is credited on receipt), so one stalled consumer stops its own
stream and nothing else. This module sizes that waiting room from the stream's
pace: ``throughput x target_latency`` (at least ``floor``, at most ``cap``), i.e.
"never hold more than ``target_latency`` seconds of this consumer's work".

When a read finds more waiting than that, the consumer has fallen behind: the
stream's window is cut to the budget, so the increments the consumer's reads
would have granted are withheld until the sender's allowance is down to it
(backpressure for that stream only). Whether everything waiting is then handed
over as one piece (coalesced bytes: several NDJSON lines in one read, each still
its own chunk above) or one DATA frame at a time is ``StreamConfig.coalesce_reads``,
applied by the transport's response stream.
A consumer that keeps up always finds one frame waiting and gets it at once.
"""

from __future__ import annotations

_RATE_WEIGHT = 0.5  # EWMA weight of the newest rate measurement


class ConsumerBudget:
    """Per-transport policy; the per-stream numbers live on the stream object."""

    __slots__ = ("cap", "floor", "target_latency")

    def __init__(self, *, target_latency: float, floor: int, cap: int) -> None:
        self.target_latency = target_latency
        self.floor = floor
        self.cap = max(floor, cap)

    @staticmethod
    def smooth_rate(previous: float, read: int, elapsed: float) -> float:
        """The stream's read rate (bytes/s), smoothed over evaluation intervals."""
        if elapsed <= 0.0:
            return previous
        rate = read / elapsed
        if previous <= 0.0:
            return rate
        return previous + (rate - previous) * _RATE_WEIGHT

    def limit(self, rate: float, rtt: float) -> int:
        """Bytes that may wait for a consumer reading ``rate`` bytes/s.

        At least two round trips of its pace, or the sender would idle between
        window updates.
        """
        budget = int(rate * max(self.target_latency, 2 * rtt))
        return min(max(budget, self.floor), self.cap)

    def lagging(self, queued: int, rate: float, rtt: float, window: int) -> int:
        """The window to cut to if ``queued`` bytes waiting means the consumer lags, else 0.

        Lagging: more than half the stream's ``window`` waited unread (the sender was
        held up by this consumer, not by the network) and more than the budget.
        Reads of a consumer that keeps up find at most a socket read's worth waiting.
        """
        if queued <= self.floor or 2 * queued <= window or rate <= 0.0:
            return 0
        limit = self.limit(rate, rtt)
        return limit if queued > limit and limit < window else 0
