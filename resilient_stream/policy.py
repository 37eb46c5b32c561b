"""The attempt policy (sans-I/O): may another attempt follow this failure, and when?

The most important decision of the library lives here, apart from sockets
and timers, so every branch is unit-tested with a plain clock value. One
policy belongs to one logical stream. It owns the stream's attempt count,
retries, failures in a row, deadline and its one free transparent retry, and
it charges the replicas' retry budgets and blames a failing replica. The
stream (stream.py) reports events and carries out what comes back:

    policy.start(now)
    replica = policy.next_replica(now)          # before each attempt
    policy.on_first_chunk()                     # the attempt delivered output
    failure = policy.on_failure(exc, now=..., phase=..., started=...)
    if failure.give_up is not None: raise failure.give_up
    verdict = policy.admit(exc, now=..., phase=..., started=...)   # Retry(delay) | GiveUp

Between ``on_failure`` and ``admit`` the stream asks its planner how the next
request looks (a token budget that ran out exactly at a break needs none).
"""

from __future__ import annotations

import asyncio
import enum
import random
from dataclasses import dataclass

from .config import StreamConfig
from .errors import (
    AttemptsExhausted,
    ConnectionLostError,
    GoAwayError,
    HTTPStatusError,
    StreamError,
)
from .failures import blames_replica, budget_error, deadline_error, describe, give_up_error
from .replicas import Replica, ReplicaSet
from .retry import (
    FREE_TRANSPARENT_RETRIES,
    backoff_delay,
    is_retryable,
    is_transparent,
    note_transparent_retries,
)


class Phase(enum.Enum):
    """Where an attempt failed: before its response headers, or while reading its body."""

    HEADERS = "headers"
    BODY = "body"


@dataclass(frozen=True, slots=True)
class Retry:
    """Make another attempt after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """End the stream with ``error``."""

    error: BaseException


Verdict = Retry | GiveUp


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failure changed: the replica it ejected (to log), and the error to end
    with when no further attempt may follow whatever the budgets say."""

    ejected: Replica | None = None
    give_up: BaseException | None = None


class AttemptPolicy:
    """Attempts, retries and give-ups of one logical stream (see the module docstring)."""

    __slots__ = (
        "_cfg",
        "_delivered",
        "_failed_replica",
        "_free_retry",
        "_replicas",
        "_rng",
        "attempts",
        "deadline",
        "failures_in_a_row",
        "replica",
        "retries",
    )

    def __init__(self, config: StreamConfig, replicas: ReplicaSet, rng: random.Random) -> None:
        self._cfg = config
        self._replicas = replicas
        self._rng = rng
        self._failed_replica: Replica | None = None
        self._free_retry: BaseException | None = None
        self._delivered = False  # the current attempt delivered output
        #: HTTP requests that counted as attempts (a free transparent retry does not).
        self.attempts = 0
        #: Attempts that restarted from nothing (no output yet).
        self.retries = 0
        self.failures_in_a_row = 0
        self.deadline = 0.0
        #: The replica of the current (or last) attempt.
        self.replica: Replica | None = None

    # --- events ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The stream begins: its ``total_timeout`` runs from here."""
        self.deadline = now + self._cfg.total_timeout

    def next_replica(self, now: float) -> Replica:
        """Where the next attempt goes (preferring another replica than the one that
        failed, and for a retry one whose budget allows it); counts the attempt."""
        replica = self._replicas.pick(now, avoid=self._failed_replica, retry=self.attempts > 0)
        self.replica = replica
        self.attempts += 1
        self._delivered = False
        return replica

    def on_first_chunk(self) -> None:
        """The current attempt delivered output: the replica works."""
        self._delivered = True
        self.failures_in_a_row = 0
        replica = self.replica
        if replica is not None:
            replica.budget.on_success()
            self._replicas.on_success(replica)

    def on_failure(self, exc: BaseException, *, now: float, phase: Phase, started: bool) -> Failure:
        """Book a failed attempt: failures in a row, the retry budget, replica blame.
        ``started``: the caller already has output (a further attempt is a resume)."""
        if isinstance(exc, asyncio.CancelledError):
            return Failure()  # cancelling stops; it is nobody's failure
        if phase is Phase.HEADERS and self._transparent(exc):
            self.attempts -= 1  # never processed, the first time: costs no attempt
            return Failure()
        self.failures_in_a_row += 1
        replica = self.replica
        first_report = _first_report(exc)
        if not self._delivered and replica is not None and first_report:
            replica.budget.on_failure()
        ejected = None
        if replica is not None and blames_replica(exc):
            self._failed_replica = replica
            if first_report and self._replicas.on_failure(replica, now):
                ejected = replica
        give_up = None
        if not is_retryable(exc) or (started and not self._cfg.resume):
            give_up = self.give_up(exc)
        return Failure(ejected=ejected, give_up=give_up)

    def admit(
        self,
        exc: BaseException,
        *,
        now: float,
        phase: Phase,
        started: bool,
    ) -> Verdict:
        """May another attempt follow ``exc``, and after how long? The replicas' retry
        budgets, ``max_attempts``, backoff, Retry-After and the deadline decide.

        After a break mid-body the first try is immediate (a new connection may just
        work); before headers, backoff starts with the first failure."""
        restart = phase is Phase.HEADERS or not started  # a retry, not a resume
        if self._transparent(exc):
            if phase is Phase.BODY and not started:
                self.retries += 1
            return Retry(0.0)  # never processed, the first time: no wait either
        cfg = self._cfg
        if not self._replicas.can_retry():
            error = budget_error(exc, attempts=self.attempts, endpoint=self.endpoint)
            error.__cause__ = exc
            return GiveUp(self.give_up(error))
        if self.attempts >= cfg.max_attempts:
            error = AttemptsExhausted(
                f"gave up after {self.attempts} attempts; last cause: {describe(exc)}",
                endpoint=self.endpoint,
                attempts=self.attempts,
            )
            error.__cause__ = exc
            return GiveUp(self.give_up(error))
        failures = self.failures_in_a_row - (1 if phase is Phase.BODY else 0)
        delay = backoff_delay(failures, cfg.backoff_initial, cfg.backoff_max, self._rng)
        if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
            if exc.retry_after > cfg.retry_after_max:
                error = HTTPStatusError(
                    exc.status_code,
                    exc.body,
                    endpoint=exc.endpoint,
                    content_type=exc.content_type,
                    note=f"Retry-After {exc.retry_after:.0f}s exceeds "
                    f"retry_after_max={cfg.retry_after_max:.0f}s",
                )
                error.__cause__ = exc
                return GiveUp(self.give_up(error))
            delay = max(delay, exc.retry_after)
        if now + delay >= self.deadline:
            return GiveUp(self.give_up(self.deadline_error(exc)))
        if restart:
            self.retries += 1
        return Retry(delay)

    # --- the errors a stream ends with --------------------------------------------------

    @property
    def endpoint(self) -> str | None:
        return self.replica.url if self.replica is not None else None

    def give_up(self, exc: BaseException, note: str = "") -> BaseException:
        """The error a stream ends with after ``exc`` (typed, attempts stamped)."""
        return give_up_error(
            exc,
            attempts=self.attempts,
            max_attempts=self._cfg.max_attempts,
            endpoint=self.endpoint,
            note=note,
        )

    def deadline_error(self, exc: BaseException | None) -> StreamError:
        return deadline_error(
            exc,
            total_timeout=self._cfg.total_timeout,
            attempts=self.attempts,
            endpoint=self.endpoint,
        )

    # --- internals ---------------------------------------------------------------------

    def _transparent(self, exc: BaseException) -> bool:
        """A free, immediate retry (gRPC's transparent retry): the server never processed
        the request, and this stream has not had its one yet (nor the transport, for
        this request). A repeat is an ordinary failure: counted, backed off, charged to
        the retry budget, so a server that refuses everything gets no request storm."""
        if exc is self._free_retry:
            return True
        if not is_transparent(exc):
            return False
        if self._free_retry is not None:
            note_transparent_retries(exc, FREE_TRANSPARENT_RETRIES)  # spent: ordinary now
            return False
        self._free_retry = exc
        return True


def _first_report(exc: BaseException) -> bool:
    """Whether this failure event is counted for the first time.

    A connection that was up and then dropped (or sent GOAWAY) fails every
    stream multiplexed on it with the same exception object: one event, not N.
    Charging the retry budget (and the replica's failure count) N times would
    turn one reset by a load balancer into "the backend is down" and fail
    healthy retries fast. A failed *connect* is what a down backend looks like,
    so each stream's attempt to reach it is still counted.
    """
    if not isinstance(exc, ConnectionLostError | GoAwayError):
        return True
    if exc.__dict__.get("_resilient_counted"):
        return False
    exc.__dict__["_resilient_counted"] = True
    return True
