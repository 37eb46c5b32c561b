"""Choosing a replica for each attempt (sans-I/O, the clock is passed in).

Streams start on replicas in round-robin order. A replica that fails
``eject_after`` times in a row is ejected for ``readmit_after`` seconds; a
failed attempt moves to the next healthy replica, so a resume may continue
on another replica. If every replica is ejected, the one due back soonest is
tried anyway (failing over to nothing would only turn an outage into an error
sooner than the retry policy allows).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Replica:
    url: str
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    successes: int = 0
    failures: int = 0

    def healthy(self, now: float) -> bool:
        return self.ejected_until <= now


class ReplicaSet:
    def __init__(self, urls: list[str], *, eject_after: int, readmit_after: float) -> None:
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self._eject_after = max(1, eject_after)
        self._readmit_after = readmit_after
        self._next = 0

    def pick(self, now: float, *, avoid: Replica | None = None) -> Replica:
        """The next healthy replica, preferring one other than ``avoid``."""
        n = len(self.replicas)
        start = self._next
        self._next = (self._next + 1) % n
        fallback: Replica | None = None
        for i in range(n):
            replica = self.replicas[(start + i) % n]
            if not replica.healthy(now):
                continue
            if replica is avoid and n > 1:
                fallback = fallback or replica
                continue
            return replica
        if fallback is not None:
            return fallback
        return min(self.replicas, key=lambda r: r.ejected_until)

    def on_success(self, replica: Replica) -> None:
        replica.consecutive_failures = 0
        replica.ejected_until = 0.0
        replica.successes += 1

    def on_failure(self, replica: Replica, now: float) -> bool:
        """Record a failure; True if this ejected the replica."""
        replica.failures += 1
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self._eject_after and replica.healthy(now):
            replica.ejected_until = now + self._readmit_after
            replica.consecutive_failures = 0
            return True
        return False
