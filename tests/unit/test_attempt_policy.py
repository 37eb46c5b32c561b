"""The attempt policy without sockets or clocks: every decision branch of
"may another attempt follow this failure, and after how long?"."""

from __future__ import annotations

import asyncio
import random

import pytest

from resilient_stream import StreamConfig
from resilient_stream.errors import (
    AttemptsExhausted,
    ConnectionLostError,
    DeadlineExceeded,
    HTTPStatusError,
    RefusedStreamError,
    RetryBudgetExhausted,
    StallError,
    TransportError,
    TruncatedStreamError,
)
from resilient_stream.policy import AttemptPolicy, GiveUp, Phase, Retry
from resilient_stream.replicas import ReplicaSet

CFG = StreamConfig(
    max_attempts=4, backoff_initial=0.1, backoff_max=1.0, total_timeout=100.0,
    retry_budget_tokens=0.0, replica_eject_after=2, retry_after_max=30.0,
)  # fmt: skip


def policy(
    cfg: StreamConfig = CFG, urls: tuple[str, ...] = ("http://a",), budget: float = 0.0
) -> AttemptPolicy:
    replicas = ReplicaSet(
        list(urls),
        eject_after=cfg.replica_eject_after,
        readmit_after=cfg.replica_readmit_after,
        budget_tokens=budget,
        budget_ratio=cfg.retry_budget_ratio,
    )
    p = AttemptPolicy(cfg, replicas, random.Random(7))
    p.start(0.0)
    return p


def fail(p: AttemptPolicy, exc: BaseException, phase: Phase = Phase.HEADERS,
         started: bool = False, now: float = 1.0) -> Retry | GiveUp:  # fmt: skip
    noted = p.on_failure(exc, now=now, phase=phase, started=started)
    if noted.give_up is not None:
        return GiveUp(noted.give_up)
    return p.admit(exc, now=now, phase=phase, started=started)


def lost() -> ConnectionLostError:
    return ConnectionLostError("reset")


# --- what may be retried -------------------------------------------------------------


def test_a_permanent_error_ends_the_stream_as_it_is() -> None:
    p = policy()
    p.next_replica(0.0)
    exc = HTTPStatusError(404, "model 'x' not found")
    verdict = fail(p, exc)
    assert isinstance(verdict, GiveUp) and verdict.error is exc and exc.attempts == 1


def test_a_retryable_failure_before_output_is_retried_with_backoff() -> None:
    p = policy()
    p.next_replica(0.0)
    verdict = fail(p, lost())
    assert isinstance(verdict, Retry) and 0.0 <= verdict.delay <= 0.1
    assert p.retries == 1


def test_after_output_a_break_is_resumed_at_once_then_backed_off() -> None:
    p = policy()
    p.next_replica(0.0)
    first = fail(p, TruncatedStreamError("cut"), Phase.BODY, started=True)
    assert first == Retry(0.0)  # the first try after a break mid-body is immediate
    p.next_replica(0.0)
    second = fail(p, TruncatedStreamError("cut"), Phase.BODY, started=True)
    assert isinstance(second, Retry) and 0.0 <= second.delay <= 0.1
    assert p.retries == 0  # resumes are not retries


def test_resume_disabled_gives_up_once_output_started() -> None:
    p = policy(CFG.replace(resume=False))
    p.next_replica(0.0)
    exc = TruncatedStreamError("cut")
    verdict = fail(p, exc, Phase.BODY, started=True)
    assert isinstance(verdict, GiveUp) and verdict.error is exc


def test_cancellation_is_nobodys_failure() -> None:
    p = policy()
    replica = p.next_replica(0.0)
    noted = p.on_failure(asyncio.CancelledError(), now=1.0, phase=Phase.BODY, started=True)
    assert noted.give_up is None and p.failures_in_a_row == 0 and replica.failures == 0


# --- limits ----------------------------------------------------------------------------


def test_attempts_run_out_with_the_last_cause_named() -> None:
    p = policy()
    verdicts = []
    for _ in range(4):
        p.next_replica(0.0)
        verdicts.append(fail(p, lost()))
    assert all(isinstance(v, Retry) for v in verdicts[:3])
    last = verdicts[3]
    assert isinstance(last, GiveUp) and isinstance(last.error, AttemptsExhausted)
    assert "4 attempts" in str(last.error) and "ConnectionLostError" in str(last.error)
    assert isinstance(last.error.__cause__, ConnectionLostError)


def test_backoff_grows_with_failures_in_a_row_and_is_capped() -> None:
    delays = []
    p = policy(CFG.replace(max_attempts=50))
    for _ in range(12):
        p.next_replica(0.0)
        verdict = fail(p, lost())
        assert isinstance(verdict, Retry)
        delays.append(verdict.delay)
    assert max(delays) <= 1.0  # backoff_max
    assert max(delays[6:]) > 0.1  # the ceiling grew past backoff_initial


def test_first_chunk_resets_the_failures_in_a_row() -> None:
    p = policy()
    p.next_replica(0.0)
    fail(p, lost())
    assert p.failures_in_a_row == 1
    p.next_replica(0.0)
    p.on_first_chunk()
    assert p.failures_in_a_row == 0


def test_the_deadline_ends_retries_when_the_wait_would_pass_it() -> None:
    p = policy(CFG.replace(total_timeout=10.0))
    p.next_replica(0.0)
    verdict = fail(p, HTTPStatusError(503, "busy", retry_after=5.0), now=6.0)
    assert isinstance(verdict, GiveUp) and isinstance(verdict.error, DeadlineExceeded)
    assert "total_timeout (10.0s)" in str(verdict.error)


def test_retry_after_is_honoured_and_a_too_long_one_gives_up() -> None:
    p = policy()
    p.next_replica(0.0)
    verdict = fail(p, HTTPStatusError(429, "slow down", retry_after=3.0))
    assert isinstance(verdict, Retry) and verdict.delay >= 3.0
    p.next_replica(0.0)
    verdict = fail(p, HTTPStatusError(503, "busy", retry_after=120.0))
    assert isinstance(verdict, GiveUp) and isinstance(verdict.error, HTTPStatusError)
    assert "exceeds retry_after_max=30s" in str(verdict.error)


def test_an_empty_retry_budget_fails_fast() -> None:
    p = policy(budget=4.0)  # retries stop when tokens <= 2
    p.next_replica(0.0)
    assert isinstance(fail(p, TransportError("connect refused")), Retry)
    p.next_replica(0.0)
    verdict = fail(p, TransportError("connect refused"))
    assert isinstance(verdict, GiveUp) and isinstance(verdict.error, RetryBudgetExhausted)


def test_a_shared_connection_drop_charges_the_budget_once() -> None:
    """One dropped connection fails every stream on it with the same exception."""
    replicas = ReplicaSet(["http://a"], eject_after=2, readmit_after=10, budget_tokens=10)
    streams = [AttemptPolicy(CFG, replicas, random.Random(i)) for i in range(5)]
    shared = lost()
    for p in streams:
        p.start(0.0)
        p.next_replica(0.0)
        p.on_failure(shared, now=1.0, phase=Phase.BODY, started=False)
    assert replicas.replicas[0].budget.tokens == 9.0


# --- transparent retries ----------------------------------------------------------------


def test_a_never_processed_request_gets_one_free_immediate_retry() -> None:
    p = policy()
    p.next_replica(0.0)
    first = RefusedStreamError("refused", error_code=7)
    assert fail(p, first) == Retry(0.0)
    assert p.attempts == 0 and p.retries == 0 and p.failures_in_a_row == 0


def test_a_repeated_refusal_is_an_ordinary_failure() -> None:
    p = policy()
    p.next_replica(0.0)
    fail(p, RefusedStreamError("refused", error_code=7))
    p.next_replica(0.0)
    again = fail(p, RefusedStreamError("refused", error_code=7))
    assert isinstance(again, Retry)
    assert p.attempts == 1 and p.retries == 1 and p.failures_in_a_row == 1


def test_a_server_refusing_forever_runs_out_of_attempts() -> None:
    p = policy()
    verdict: Retry | GiveUp = Retry(0.0)
    for _ in range(20):
        p.next_replica(0.0)
        verdict = fail(p, RefusedStreamError("refused", error_code=7))
        if isinstance(verdict, GiveUp):
            break
    assert isinstance(verdict, GiveUp) and isinstance(verdict.error, AttemptsExhausted)
    assert "REFUSED" in str(verdict.error) or "refused" in str(verdict.error)


# --- replicas ---------------------------------------------------------------------------


def test_a_failing_replica_is_blamed_avoided_and_ejected() -> None:
    p = policy(urls=("http://a", "http://b"))
    first = p.next_replica(0.0)
    assert p.on_failure(StallError("stall", waited=1.0), now=1.0, phase=Phase.BODY,
                        started=True).ejected is None  # fmt: skip
    assert p.next_replica(1.0) is not first  # avoided
    p.on_failure(lost(), now=1.0, phase=Phase.BODY, started=True)
    p.replica = first
    noted = p.on_failure(lost(), now=2.0, phase=Phase.BODY, started=True)
    assert noted.ejected is first and not first.healthy(2.0)


def test_a_request_error_does_not_blame_the_replica() -> None:
    p = policy(urls=("http://a", "http://b"))
    replica = p.next_replica(0.0)
    p.on_failure(HTTPStatusError(400, "bad"), now=1.0, phase=Phase.HEADERS, started=False)
    assert replica.consecutive_failures == 0


@pytest.mark.parametrize("phase", [Phase.HEADERS, Phase.BODY])
def test_give_up_stamps_attempts_and_endpoint(phase: Phase) -> None:
    p = policy()
    p.next_replica(0.0)
    exc = HTTPStatusError(401, "no")
    verdict = fail(p, exc, phase)
    assert isinstance(verdict, GiveUp)
    assert verdict.error.attempts == 1  # type: ignore[attr-defined]
    assert p.endpoint == "http://a"
