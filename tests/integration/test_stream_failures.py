"""What a ResilientStream does when it cannot (or must not) resume: permanent errors,
retry budget, deadlines, cancellation, replicas. Real sockets, real reference server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.errors import (
    DeadlineExceeded,
    HTTPStatusError,
    InvalidRequestError,
    RetryBudgetExhausted,
    ServerReportedError,
    StreamError,
)
from resilient_stream.refserver import Fault, ReferenceServer, RequestInfo
from resilient_stream.refserver.faults import FaultSchedule

pytestmark = pytest.mark.timeout(60)

FAST = dict(
    idle_timeout=0.5,
    first_token_timeout=2.0,
    total_timeout=20.0,
    backoff_initial=0.01,
    backoff_max=0.05,
)
OPTS = {"num_predict": 30}


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


def free_port() -> int:
    """A port with nothing listening (bound then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_missing_model_fails_at_once_with_an_actionable_message(
    server: ReferenceServer,
) -> None:
    async with StreamClient(server.url, config=StreamConfig(**FAST)) as client:
        stream = client.generate(model="missing-model", prompt="hi")
        with pytest.raises(HTTPStatusError) as info:
            await stream.collect()
    assert info.value.status_code == 404
    assert info.value.attempts == 1
    assert "not found" in str(info.value) and "ollama pull" in str(info.value)
    assert server.stats.requests == 1


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_client_errors_are_not_retried(status: int) -> None:
    plan = FaultSchedule({0: Fault("status", status=status)})
    async with ReferenceServer(faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            with pytest.raises(HTTPStatusError) as info:
                await client.generate(model="m", prompt="hi").collect()
        assert srv.stats.requests == 1
    assert info.value.status_code == status and not info.value.retryable


async def test_error_line_naming_a_bad_request_is_permanent() -> None:
    plan = FaultSchedule({0: Fault("error_line", after_tokens=3, message="invalid option 'x'")})
    async with ReferenceServer(faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            stream = client.generate(model="m", prompt="hi", options=OPTS)
            got = []
            with pytest.raises(ServerReportedError, match="invalid option"):
                async for chunk in stream:
                    got.append(chunk.response)
        assert srv.stats.requests == 1
    assert len(got) == 3  # what arrived before the error line is not lost
    assert stream.result.text == "".join(got)


async def test_unknown_request_field_is_rejected_before_any_request(
    server: ReferenceServer,
) -> None:
    async with StreamClient(server.url) as client:
        with pytest.raises(InvalidRequestError, match="optoins"):
            client.generate(model="m", prompt="x", optoins={})
    assert server.stats.requests == 0


async def test_backend_down_fails_fast_within_the_retry_budget() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cfg = StreamConfig(retry_budget_tokens=10, max_attempts=8, **FAST)
    async with StreamClient(url, config=cfg) as client:
        streams = [client.generate(model="m", prompt="x") for _ in range(20)]
        results = await asyncio.gather(*(s.collect() for s in streams), return_exceptions=True)
    assert all(isinstance(r, StreamError) for r in results)
    assert any(isinstance(r, RetryBudgetExhausted) for r in results)
    budget_msg = next(str(r) for r in results if isinstance(r, RetryBudgetExhausted))
    assert "retry budget" in budget_msg and "Connect" in budget_msg
    total_attempts = sum(s.result.attempts for s in streams)
    # 20 first attempts + at most ~half the bucket of retries (not 20 x 8 = 160).
    assert total_attempts <= 20 + 10
    # Fast: the retry limits ended every stream, none was left to run into total_timeout.
    assert not any(isinstance(r, DeadlineExceeded) for r in results)


async def test_server_that_never_answers_fails_within_the_deadline() -> None:
    plan = FaultSchedule({i: Fault("never_answer") for i in range(50)})
    cfg = StreamConfig(
        total_timeout=1.5, first_token_timeout=0.4, backoff_initial=0.01, backoff_max=0.05
    )
    async with ReferenceServer(faults=plan) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            with pytest.raises(StreamError) as info:
                await client.generate(model="m", prompt="x").collect()
    assert isinstance(info.value, DeadlineExceeded) or "first_token_timeout" in str(info.value)
    # Each attempt waits out first_token_timeout (0.4 s), so total_timeout (1.5 s) leaves
    # room for 4 at most; without the deadline, max_attempts (8) would all be sent.
    assert 1 <= srv.stats.requests <= 4


async def test_breaking_out_cancels_upstream_and_leaks_nothing(server: ReferenceServer) -> None:
    slow = StreamConfig(**FAST)
    async with ReferenceServer(tokens_per_second=200, stop_probability=0.0) as srv:
        tasks_before = set(asyncio.all_tasks())
        async with StreamClient(srv.url, config=slow) as client:
            stream = client.generate(model="m", prompt="x", options={"num_predict": 1000})
            n = 0
            async for _ in stream:
                n += 1
                if n == 5:
                    break
            await stream.aclose()
            await asyncio.sleep(0.2)
            generated = srv.stats.tokens_generated
            await asyncio.sleep(0.3)
            assert srv.stats.tokens_generated == generated  # the server stopped
            assert srv.stats.streams_cancelled_by_client == 1
            assert client.open_streams == 0
        assert srv.stats.requests == 1  # no retry after a cancel
    await asyncio.sleep(0.05)
    assert set(asyncio.all_tasks()) <= tasks_before


async def test_task_cancellation_stops_upstream_and_is_not_swallowed() -> None:
    async with ReferenceServer(tokens_per_second=200, stop_probability=0.0) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            stream = client.chat(
                model="m", messages=[{"role": "user", "content": "x"}], options={"num_predict": 999}
            )
            task = asyncio.create_task(stream.collect())
            for _ in range(100):
                if srv.stats.tokens_generated >= 5:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.2)
            generated = srv.stats.tokens_generated
            await asyncio.sleep(0.2)
            assert srv.stats.tokens_generated == generated
            assert client.open_streams == 0
        assert srv.stats.requests == 1


async def test_failed_replica_is_skipped_and_resume_continues_on_another() -> None:
    def always_drop(info: RequestInfo) -> Fault | None:
        return Fault("drop_connection", after_tokens=4)

    async with (
        ReferenceServer(stop_probability=0.0, faults=always_drop) as bad,
        ReferenceServer(stop_probability=0.0) as good,
    ):
        async with StreamClient(good.url, config=StreamConfig(**FAST)) as client:
            expected = await client.generate(model="m", prompt="p", options=OPTS).collect()
        cfg = StreamConfig(replica_eject_after=1, **FAST)
        async with StreamClient([bad.url, good.url], config=cfg) as client:
            result = await client.generate(model="m", prompt="p", options=OPTS).collect()
            assert client.replicas.replicas[0].ejected_until > 0
    assert result.text == expected.text
    assert result.resumes == 1
    assert result.seams[0].endpoint == bad.url.rstrip("/")
    assert [h.endpoint for h in result.history] == [bad.url, good.url]


async def test_truncation_is_never_reported_as_success(server: ReferenceServer) -> None:
    plan = FaultSchedule({i: Fault("truncate", after_tokens=2) for i in range(20)})
    cfg = StreamConfig(max_attempts=3, **FAST)
    async with ReferenceServer(faults=plan, stop_probability=0.0) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            stream = client.generate(model="m", prompt="x", options=OPTS)
            with pytest.raises(StreamError, match=r"3 attempts.*final chunk"):
                await stream.collect()
    assert not stream.result.done
    # Kept: the first attempt's 2 tokens, then one more: each resume first regenerates
    # what it held back (the whole short partial, then its last token; a request must
    # carry more than the one before it), and the server cuts after 2 tokens each time.
    assert stream.result.eval_count == 3
    assert len(stream.result.text.split()) == 3


@pytest.mark.parametrize("adaptive", [True, False])
async def test_stall_on_a_fast_stream_is_caught_by_the_adaptive_idle_timeout(
    adaptive: bool,
) -> None:
    """50 tokens/s: the adaptive timeout catches the stall in well under a second, where the
    fixed idle_timeout (the cap, 4 s here) would wait the whole time."""
    plan = FaultSchedule({0: Fault("stall", after_tokens=20)})
    cfg = StreamConfig(
        idle_timeout=4.0,
        adaptive_idle_timeout=adaptive,
        first_token_timeout=5.0,
        backoff_initial=0.01,
        backoff_max=0.02,
    )
    async with ReferenceServer(tokens_per_second=50, stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            stream = client.generate(model="m", prompt="x", options={"num_predict": 30})
            result = await stream.collect()
    assert result.resumes == 1 and result.eval_count == 30
    reason = result.seams[0].reason
    assert reason.startswith("StallError")
    waited = float(reason.split("for ")[1].split("s")[0])
    limit = float(reason.split("idle timeout ")[1].split("s")[0])  # the bound that fired
    assert waited >= limit - 0.01, reason  # it waited that bound out, no less
    if adaptive:
        # The bound followed the 20 ms token gaps down from the 4 s cap (wall-clock
        # detection latency is measured in bench/bench_buffering.py, "stall").
        assert limit < 4.0, reason
        assert "adapted to the stream's pace" in reason
    else:
        assert limit == 4.0 and waited >= 3.9, reason


async def test_one_dropped_connection_costs_the_retry_budget_once() -> None:
    """60 streams multiplexed on one connection fail together before their first token:
    that is one event, so a small budget still lets all of them retry."""
    n = 60
    plan = FaultSchedule({n - 1: Fault("drop_connection", after_tokens=0)})
    cfg = StreamConfig(retry_budget_tokens=10, **FAST)
    async with ReferenceServer(stop_probability=0.0, first_token_delay=0.3, faults=plan) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            streams = [client.generate(model="m", prompt=f"p{i}", options=OPTS) for i in range(n)]
            results = await asyncio.gather(*(s.collect() for s in streams))
        assert srv.stats.connections_opened >= 2
    assert all(r.done and r.eval_count == 30 for r in results)
    assert sum(r.retries for r in results) >= n - 1  # they did fail, and were retried
    assert client.replicas.replicas[0].budget.tokens >= 9
