"""structlog events: one per attempt/resume/give-up, never per chunk, no content by default."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.errors import HTTPStatusError
from resilient_stream.refserver import Fault, ReferenceServer
from resilient_stream.refserver.faults import FaultSchedule

pytestmark = pytest.mark.timeout(30)

FAST = dict(idle_timeout=0.5, backoff_initial=0.01, backoff_max=0.02)


@pytest.mark.parametrize("log_content", [False, True])
async def test_one_event_per_resume_and_content_only_when_opted_in(log_content: bool) -> None:
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=5)})
    cfg = StreamConfig(log_content=log_content, log_level="debug", **FAST)
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            with capture_logs() as logs:
                stream = client.generate(
                    model="m", prompt="SECRET-PROMPT", options={"num_predict": 40}
                )
                result = await stream.collect()
    events = [e["event"] for e in logs]
    assert events.count("stream.resume") == 1
    assert events.count("stream.attempt") == 2
    assert len(logs) < 10  # 41 chunks, a handful of events: nothing per chunk
    (resume,) = [e for e in logs if e["event"] == "stream.resume"]
    assert resume["tokens"] == 5 and resume["stream"] == stream.id
    assert "ConnectionLost" in resume["cause"] or "Truncated" in resume["cause"]
    dumped = repr(logs)
    assert "SECRET-PROMPT" not in dumped
    partial = result.text[: result.seams[0].offset]
    assert (partial in dumped) == log_content


async def test_give_up_is_logged_with_the_cause() -> None:
    plan = FaultSchedule({0: Fault("status", status=404)})
    async with ReferenceServer(faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            with capture_logs() as logs, pytest.raises(HTTPStatusError):
                await client.generate(model="m", prompt="x").collect()
    (give_up,) = [e for e in logs if e["event"] == "stream.give_up"]
    assert give_up["error"] == "HTTPStatusError" and give_up["attempts"] == 1


async def test_default_level_skips_per_attempt_debug_events() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            with capture_logs() as logs:
                await client.generate(model="m", prompt="x", options={"num_predict": 5}).collect()
    assert logs == []


async def test_a_retry_after_headers_but_before_output_is_logged_like_any_retry() -> None:
    """A body that breaks before its first chunk is retried (not resumed): the
    retry_wait event says so (the CLI's progress lines are built from it)."""
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=0)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            with capture_logs() as logs:
                result = await client.generate(
                    model="m", prompt="x", options={"num_predict": 5}
                ).collect()
    assert result.retries == 1 and result.resumes == 0
    (wait,) = [e for e in logs if e["event"] == "stream.retry_wait"]
    assert wait["attempt"] == 1 and wait["wait"] >= 0.0
