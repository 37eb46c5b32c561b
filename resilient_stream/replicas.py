"""Choosing a replica for each attempt (sans-I/O, the clock is passed in).

Streams start on replicas in round-robin order. A replica that fails
``eject_after`` times in a row is ejected for ``readmit_after`` seconds; a
failed attempt moves to the next healthy replica, so a resume may continue
on another replica. If every replica is ejected, the one due back soonest is
tried anyway (failing over to nothing would only turn an outage into an error
sooner than the retry policy allows); for the same reason a client with one
replica never ejects it.

Each replica has its own retry budget (gRPC throttles retries per target the
same way): when one replica dies, its budget drains and retries move to the
others; only when every replica's budget is drained do streams fail fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .retry import RetryBudget


@dataclass(slots=True)
class Replica:
    url: str
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    successes: int = 0
    failures: int = 0
    budget: RetryBudget = field(default_factory=lambda: RetryBudget(0, 1.0))

    def healthy(self, now: float) -> bool:
        return self.ejected_until <= now


class ReplicaSet:
    def __init__(
        self,
        urls: list[str],
        *,
        eject_after: int,
        readmit_after: float,
        budget_tokens: float = 0.0,
        budget_ratio: float = 1.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.replicas = [
            Replica(u.rstrip("/"), budget=RetryBudget(budget_tokens, budget_ratio)) for u in urls
        ]
        self._eject_after = max(1, eject_after)
        self._readmit_after = readmit_after
        self._next = 0

    def can_retry(self) -> bool:
        """Whether any replica's retry budget still allows a retry."""
        return any(r.budget.allows_retry() for r in self.replicas)

    def pick(self, now: float, *, avoid: Replica | None = None, retry: bool = False) -> Replica:
        """The next healthy replica, preferring one other than ``avoid`` and, for a
        retry, one whose retry budget allows it."""
        n = len(self.replicas)
        start = self._next
        self._next = (self._next + 1) % n
        fallback: Replica | None = None
        for i in range(n):
            replica = self.replicas[(start + i) % n]
            if not replica.healthy(now):
                continue
            if (replica is avoid and n > 1) or (retry and not replica.budget.allows_retry()):
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
        """Record a failure; True if this ejected the replica. A lone replica is never
        ejected: there is nothing to fail over to (and nothing to warn about)."""
        replica.failures += 1
        replica.consecutive_failures += 1
        if len(self.replicas) == 1:
            return False
        if replica.consecutive_failures >= self._eject_after and replica.healthy(now):
            replica.ejected_until = now + self._readmit_after
            replica.consecutive_failures = 0
            return True
        return False
