"""ResilientStream against the real reference server: every interruption kind is
resumed, and the text equals an unbroken run byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.refserver import Fault, ReferenceServer, RequestInfo
from resilient_stream.refserver.faults import FaultSchedule

pytestmark = pytest.mark.timeout(60)

N = 40  # tokens per stream
CUT = 13  # the fault fires after this many tokens

FAST = dict(
    idle_timeout=0.5,
    first_token_timeout=2.0,
    total_timeout=20.0,
    backoff_initial=0.01,
    backoff_max=0.05,
)

ENDPOINTS: dict[str, dict[str, Any]] = {
    "generate_raw": dict(kind="generate", prompt="Once upon a time", raw=True),
    "generate": dict(kind="generate", prompt="Tell me a story", system="Be brief"),
    "chat": dict(
        kind="chat",
        messages=[{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
    ),
    "chat_think": dict(kind="chat", messages=[{"role": "user", "content": "Why?"}], think=True),
}


def open_stream(client: StreamClient, spec: dict[str, Any], num_predict: int = N) -> Any:
    fields = {k: v for k, v in spec.items() if k != "kind"}
    options = {"num_predict": num_predict, "temperature": 0}
    if spec["kind"] == "chat":
        return client.chat(model="ref", options=options, **fields)
    return client.generate(model="ref", options=options, **fields)


def texts(chunks: list[Any]) -> tuple[str, str]:
    text = "".join(c.message.content if hasattr(c, "message") else c.response for c in chunks)
    thinking = "".join(
        (c.message.thinking if hasattr(c, "message") else c.thinking) or "" for c in chunks
    )
    return text, thinking


@pytest.fixture
async def baseline_server() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


async def unbroken(srv: ReferenceServer, spec: dict[str, Any]) -> tuple[str, str]:
    async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
        stream = open_stream(client, spec)
        chunks = [c async for c in stream]
        assert stream.result.resumes == 0
        return texts(chunks)


FAULTS = {
    "drop_connection": Fault("drop_connection", after_tokens=CUT),
    "reset_stream": Fault("reset_stream", after_tokens=CUT),
    "stall": Fault("stall", after_tokens=CUT),
    "truncate": Fault("truncate", after_tokens=CUT),
    "truncate_line": Fault("truncate_line", after_tokens=CUT),
    "error_line": Fault("error_line", after_tokens=CUT, message="llama runner process died"),
    "goaway": Fault("goaway", after_tokens=CUT),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_interrupted_stream_resumes_byte_identical(
    baseline_server: ReferenceServer, endpoint: str, fault: str, http2: bool
) -> None:
    spec = ENDPOINTS[endpoint]
    expected = await unbroken(baseline_server, spec)
    plan = FaultSchedule({0: FAULTS[fault]})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(http2=http2, **FAST)) as client:
            stream = open_stream(client, spec)
            chunks = [c async for c in stream]
    result = stream.result
    assert texts(chunks) == expected
    assert (result.text, result.thinking) == expected
    assert result.done and result.done_reason == "length"
    assert result.eval_count == N
    assert chunks[-1].done and chunks[-1].eval_count == N
    assert result.attempts == 2
    assert result.resumes == 1
    (seam,) = result.seams
    assert seam.tokens == CUT
    assert seam.attempt == 2
    assert seam.offset + seam.thinking_offset == len("".join(texts(chunks[:CUT])))


async def test_fault_before_output_is_a_plain_retry(baseline_server: ReferenceServer) -> None:
    spec = ENDPOINTS["chat"]
    expected = await unbroken(baseline_server, spec)
    plan = FaultSchedule({0: Fault("status", status=503, retry_after=0.05)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            result = await open_stream(client, spec).collect()
    assert (result.text, result.thinking) == expected
    assert (result.attempts, result.retries, result.resumes) == (2, 1, 0)


async def test_several_faults_in_one_stream_resume_each_time(
    baseline_server: ReferenceServer,
) -> None:
    spec = ENDPOINTS["generate_raw"]
    expected = await unbroken(baseline_server, spec)
    plan = FaultSchedule(
        {
            0: Fault("drop_connection", after_tokens=5),
            1: Fault("truncate_line", after_tokens=7),
            2: Fault("reset_stream", after_tokens=1),
            3: Fault("status", status=500),
        }
    )
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            result = await open_stream(client, spec).collect()
    assert result.text == expected[0]
    assert result.eval_count == N
    # Each resume first regenerates the tokens it held back, and the faults count the
    # attempt's tokens, so the seams fall at 5, then 5 - overlap + 7, ...
    tokens = [s.tokens for s in result.seams]
    assert len(tokens) == 3 and tokens[0] == 5 and tokens == sorted(tokens)
    assert result.verified and all(s.overlap > 0 for s in result.seams)
    assert result.attempts == 5


async def test_http1_only_server_is_reached_through_the_automatic_fallback(
    baseline_server: ReferenceServer,
) -> None:
    """A bare Ollama speaks HTTP/1.1 only: with the default config (http2=True) the
    transport falls back by itself, and resume works the same."""
    spec = ENDPOINTS["chat"]
    expected = await unbroken(baseline_server, spec)
    hits: list[int] = []

    def first_chat_drops(info: RequestInfo) -> Fault | None:
        if info.path != "/api/chat" or hits:
            return None  # the transport's h2c probe is a request too
        hits.append(info.index)
        return Fault("drop_connection", after_tokens=CUT)

    async with ReferenceServer(stop_probability=0.0, faults=first_chat_drops, http2=False) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            result = await open_stream(client, spec).collect()
    assert (result.text, result.thinking) == expected
    assert result.resumes == 1 and result.eval_count == N
    assert len(hits) == 1
