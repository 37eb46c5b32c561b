"""HTTP/2 PING keepalive decisions: detect a dead peer that TCP still holds open (sans-I/O).

A PING goes out when nothing arrived for ``interval`` seconds; no ACK within
``timeout`` means the connection is dead. Busy connections never ping: the
core only stores :attr:`Keepalive.last_recv` per read, and the I/O edge's one
timer asks :meth:`Keepalive.next_check` when to look again.
"""

from __future__ import annotations


class Keepalive:
    """When to PING a quiet connection, and when to give up on it."""

    __slots__ = ("_sent_at", "interval", "last_recv", "rtt", "timeout")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        self.interval = interval  # <= 0: no keepalive
        self.timeout = timeout
        self.last_recv = now
        self._sent_at: float | None = None  # our PING in flight, sent then
        #: Round-trip time of the last ACKed keepalive PING (seconds), for window sizing.
        self.rtt: float | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def due(self, now: float) -> bool:
        """Quiet for ``interval`` and no PING in flight: send one now."""
        return self._sent_at is None and now - self.last_recv >= self.interval * 0.99

    def expired(self, now: float) -> bool:
        """Our PING went unanswered for ``timeout``: the connection is dead."""
        sent = self._sent_at
        return sent is not None and now - sent >= self.timeout * 0.99

    def sent(self, now: float) -> None:
        self._sent_at = now

    def acked(self, now: float) -> bool:
        """The ACK of our PING arrived. False: none was in flight (nothing changes)."""
        sent = self._sent_at
        if sent is None:
            return False
        self._sent_at = None
        self.rtt = now - sent
        return True

    def next_check(self, now: float) -> float:
        """When the edge's timer should call :meth:`due` / :meth:`expired` again."""
        sent = self._sent_at
        if sent is not None:
            return sent + self.timeout
        return max(self.last_recv + self.interval, now + 0.001)
