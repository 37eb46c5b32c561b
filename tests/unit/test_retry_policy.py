"""Retry classification, backoff, Retry-After, budget and replica health (no sockets)."""

from __future__ import annotations

import asyncio
import random

from resilient_stream.errors import (
    ConnectionLostError,
    GoAwayError,
    HTTPStatusError,
    RefusedStreamError,
    ServerReportedError,
    StallError,
    TruncatedStreamError,
)
from resilient_stream.replicas import ReplicaSet
from resilient_stream.retry import (
    RetryBudget,
    backoff_delay,
    is_retryable,
    is_transparent,
    parse_retry_after,
)


def test_retryable_and_permanent_causes() -> None:
    assert is_retryable(ConnectionLostError("x"))
    assert is_retryable(StallError("x", waited=1.0))
    assert is_retryable(TruncatedStreamError("x"))
    assert is_retryable(HTTPStatusError(503, ""))
    assert is_retryable(HTTPStatusError(429, ""))
    assert not is_retryable(HTTPStatusError(404, "model 'x' not found"))
    assert not is_retryable(HTTPStatusError(401, ""))
    assert not is_retryable(HTTPStatusError(400, ""))
    assert not is_retryable(ServerReportedError("invalid format"))
    assert is_retryable(ServerReportedError("llama runner process has terminated"))
    assert not is_retryable(asyncio.CancelledError())
    assert not is_retryable(ValueError("bug"))


def test_transparent_retries_are_only_never_processed_streams() -> None:
    assert is_transparent(RefusedStreamError("x", error_code=7))
    assert is_transparent(GoAwayError("x", last_stream_id=1, processed=False))
    assert not is_transparent(GoAwayError("x", last_stream_id=9, processed=True))
    assert not is_transparent(ConnectionLostError("x"))


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    assert backoff_delay(0, 0.1, 8.0, rng) == 0.0
    samples = [backoff_delay(3, 0.1, 8.0, rng) for _ in range(200)]
    assert all(0 <= s <= 0.4 for s in samples)
    assert max(samples) > 0.3 and min(samples) < 0.1  # spread over the whole range
    assert all(backoff_delay(40, 0.1, 8.0, rng) <= 8.0 for _ in range(50))


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    when = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    assert when == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_budget_stops_retries_when_most_attempts_fail_and_recovers() -> None:
    budget = RetryBudget(10, 1.0)
    for _ in range(4):
        budget.on_failure()
    assert budget.allows_retry()
    budget.on_failure()
    assert not budget.allows_retry()  # 5 tokens left = half: throttled
    budget.on_success()
    assert budget.allows_retry()


def test_disabled_budget_always_allows() -> None:
    budget = RetryBudget(0, 1.0)
    budget.on_failure()
    assert budget.allows_retry()


def test_replica_round_robin_ejection_and_readmission() -> None:
    rs = ReplicaSet(["http://a", "http://b"], eject_after=2, readmit_after=5.0)
    a, b = rs.replicas
    assert [rs.pick(0).url for _ in range(4)] == ["http://a", "http://b"] * 2
    assert not rs.on_failure(a, 0.0)
    assert rs.on_failure(a, 0.0)  # second failure in a row ejects
    assert [rs.pick(1.0).url for _ in range(3)] == ["http://b"] * 3
    assert rs.pick(6.0, avoid=b) is a  # readmitted after 5 s
    rs.on_success(a)
    assert a.consecutive_failures == 0


def test_failover_avoids_the_replica_that_just_failed() -> None:
    rs = ReplicaSet(["http://a", "http://b", "http://c"], eject_after=9, readmit_after=1.0)
    a = rs.replicas[0]
    assert all(rs.pick(0.0, avoid=a) is not a for _ in range(6))


def test_all_ejected_still_tries_the_one_due_back_first() -> None:
    rs = ReplicaSet(["http://a", "http://b"], eject_after=1, readmit_after=5.0)
    a, b = rs.replicas
    rs.on_failure(a, 0.0)
    rs.on_failure(b, 1.0)
    assert rs.pick(2.0) is a
