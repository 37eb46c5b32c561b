"""OpenAI-compatible SSE streams over real sockets against the reference server: an
unbroken stream equals the same request's whole answer, and every interruption kind
(server faults, h2 and h1; chaos proxy toxics) resumes byte-identically."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.chaos import ChaosProxy
from resilient_stream.errors import HTTPStatusError, InvalidRequestError
from resilient_stream.formats import adapter_for
from resilient_stream.openai import ChatCompletionChunk, openai_chat, openai_completion
from resilient_stream.refserver import Fault, ReferenceServer
from resilient_stream.refserver.faults import FaultSchedule, RequestInfo

pytestmark = pytest.mark.timeout(60)

N = 40
CUT = 13

FAST = dict(
    idle_timeout=0.5,
    first_token_timeout=2.0,
    total_timeout=20.0,
    backoff_initial=0.01,
    backoff_max=0.05,
)

MESSAGES = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
PROMPT = "Once upon a time"
USAGE = {"include_usage": True}


def open_stream(client: StreamClient, kind: str, **fields: Any) -> Any:
    fields.setdefault("max_tokens", N)
    fields.setdefault("temperature", 0)
    fields.setdefault("stream_options", USAGE)
    if kind == "chat":
        return openai_chat(client, model="ref", messages=MESSAGES, **fields)
    return openai_completion(client, model="ref", prompt=PROMPT, **fields)


def texts(chunks: list[Any]) -> tuple[str, str]:
    adapter = adapter_for(type(chunks[0]))
    pairs = [adapter.texts(c) for c in chunks]
    return "".join(t for t, _ in pairs), "".join(k or "" for _, k in pairs)


@pytest.fixture
async def baseline_server() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


async def unbroken(srv: ReferenceServer, kind: str, **fields: Any) -> tuple[str, str]:
    async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
        stream = open_stream(client, kind, **fields)
        chunks = [c async for c in stream]
        assert stream.result.resumes == 0
        return texts(chunks)


async def test_unbroken_sse_stream_equals_the_whole_answer_and_ollamas(
    baseline_server: ReferenceServer,
) -> None:
    srv = baseline_server
    streamed = await unbroken(srv, "chat")
    completed = await unbroken(srv, "completion")
    async with httpx.AsyncClient(base_url=srv.url) as http:
        whole = (
            await http.post(
                "/v1/chat/completions",
                json={"model": "ref", "messages": MESSAGES, "max_tokens": N},
            )
        ).json()
        whole_text = (
            await http.post(
                "/v1/completions", json={"model": "ref", "prompt": PROMPT, "max_tokens": N}
            )
        ).json()
    assert whole["object"] == "chat.completion"
    assert streamed == (whole["choices"][0]["message"]["content"], "")
    assert whole["usage"]["completion_tokens"] == N
    assert completed == (whole_text["choices"][0]["text"], "")
    # The same reference model behind /api/chat: the same text.
    async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
        ollama = await client.chat(
            model="ref", messages=MESSAGES, options={"num_predict": N}
        ).collect()
    assert ollama.text == streamed[0]


async def test_stream_shape_role_first_final_chunk_last_with_usage(
    baseline_server: ReferenceServer,
) -> None:
    async with StreamClient(baseline_server.url, config=StreamConfig(**FAST)) as client:
        stream = open_stream(client, "chat")
        chunks: list[ChatCompletionChunk] = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content
    assert [c.done for c in chunks] == [False] * N + [True]
    final = chunks[-1]
    assert final.choices[0].finish_reason == "length"
    assert final.usage is not None and final.usage.completion_tokens == N
    assert final.id.startswith("chatcmpl-") and final.model == "ref"
    result = stream.result
    assert result.done and result.done_reason == "length" and result.eval_count == N
    assert result.prompt_eval_count == final.usage.prompt_tokens


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
@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_interrupted_sse_stream_resumes_byte_identical(
    baseline_server: ReferenceServer, kind: str, fault: str, http2: bool
) -> None:
    expected = await unbroken(baseline_server, kind)
    plan = FaultSchedule({0: FAULTS[fault]})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(http2=http2, **FAST)) as client:
            stream = open_stream(client, kind)
            chunks = [c async for c in stream]
        assert srv.stats.requests == 2
    result = stream.result
    assert texts(chunks) == expected
    assert (result.text, result.thinking) == expected
    assert result.done and result.done_reason == "length" and result.eval_count == N
    final = chunks[-1]
    assert final.done and [c.done for c in chunks].count(True) == 1
    assert final.usage is not None and final.usage.completion_tokens == N
    assert (result.attempts, result.resumes) == (2, 1)
    (seam,) = result.seams
    assert seam.tokens == CUT and seam.offset == len(texts(chunks[:CUT])[0])


async def test_resume_asks_for_the_remaining_tokens_with_a_prefill(
    baseline_server: ReferenceServer,
) -> None:
    seen: list[RequestInfo] = []

    def plan(info: RequestInfo) -> Fault | None:
        seen.append(info)
        return Fault("drop_connection", after_tokens=CUT) if info.index == 0 else None

    expected = await unbroken(baseline_server, "chat", flavor="vllm")
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            result = await open_stream(client, "chat", flavor="vllm").collect()
    assert (result.text, result.thinking) == expected
    first, second = (s.body for s in seen)
    assert first["max_tokens"] == N and "continue_final_message" not in first
    # The last tokens delivered are held back and regenerated (a verified seam): the
    # request asks for everything after the text it carries, never more than was asked.
    assert N - CUT < second["max_tokens"] <= N
    assert second["continue_final_message"] is True and second["add_generation_prompt"] is False
    assert second["messages"][-1]["role"] == "assistant"
    assert expected[0].startswith(second["messages"][-1]["content"])


async def test_reasoning_resumes_byte_identical_mid_thinking(
    baseline_server: ReferenceServer,
) -> None:
    expected = await unbroken(baseline_server, "chat", reasoning_effort="low")
    assert expected[1], "the reference model should think first"
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=3)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            result = await open_stream(client, "chat", reasoning_effort="low").collect()
    assert (result.text, result.thinking) == expected and result.resumes == 1


async def test_several_faults_in_one_stream_resume_each_time(
    baseline_server: ReferenceServer,
) -> None:
    expected = await unbroken(baseline_server, "completion")
    plan = FaultSchedule(
        {
            0: Fault("truncate_line", after_tokens=5),
            1: Fault("error_line", after_tokens=7),
            2: Fault("status", status=503),
            3: Fault("reset_stream", after_tokens=4),
        }
    )
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            result = await open_stream(client, "completion").collect()
    assert (result.text, result.thinking) == expected
    assert result.eval_count == N and result.resumes == 3 and result.retries == 1


async def test_sse_stream_through_the_chaos_proxy_resumes_byte_identically(
    baseline_server: ReferenceServer,
) -> None:
    kinds = ["chat", "completion"] * 4
    want = [await unbroken(baseline_server, k, max_tokens=60, seed=i) for i, k in enumerate(kinds)]
    toxics = [
        "reset_stream:probability=1.0,min_bytes=600,max_bytes=6000,max_streams=2",
        "drop_after_data_frames:frames=15,frames_max=40,toxicity=0.5",
        "slicer:average_size=40,size_variation=30",
    ]
    async with ReferenceServer(stop_probability=0.0, tokens_per_second=400) as srv:
        async with ChaosProxy(upstream=f"127.0.0.1:{srv.port}", toxics=toxics, seed=3) as proxy:
            async with StreamClient(proxy.url, config=StreamConfig(**FAST)) as client:
                streams = [
                    open_stream(client, k, max_tokens=60, seed=i) for i, k in enumerate(kinds)
                ]
                results = [await s.collect() for s in streams]
            faults = {f.kind for f in proxy.faults}
    assert "reset_stream" in faults
    assert sum(r.resumes for r in results) >= 2
    assert [(r.text, r.thinking) for r in results] == want
    assert all(r.eval_count == 60 and r.done for r in results)


async def test_a_server_that_closes_the_assistant_turn_starts_over_without_the_flavor(
    baseline_server: ReferenceServer,
) -> None:
    """What the vLLM flavor is for: add_generation_prompt=true (vLLM's default) makes the
    server answer anew instead of continuing the prefill."""
    msgs = [*MESSAGES, {"role": "assistant", "content": "The"}]
    async with StreamClient(baseline_server.url, config=StreamConfig(**FAST)) as client:
        cont = await openai_chat(client, model="ref", messages=msgs, max_tokens=10).collect()
        closed = await openai_chat(
            client, model="ref", messages=msgs, max_tokens=10, add_generation_prompt=True
        ).collect()
        vllm = await openai_chat(
            client,
            model="ref",
            messages=msgs,
            max_tokens=10,
            continue_final_message=True,
            add_generation_prompt=False,
        ).collect()
    assert cont.text == vllm.text
    assert closed.text != cont.text


async def test_bad_requests_fail_at_once(baseline_server: ReferenceServer) -> None:
    async with StreamClient(baseline_server.url, config=StreamConfig(**FAST)) as client:
        with pytest.raises(HTTPStatusError) as info:
            await openai_chat(client, model="missing-model", messages=MESSAGES).collect()
        assert info.value.status_code == 404 and info.value.attempts == 1
        with pytest.raises(HTTPStatusError) as info:
            await openai_chat(
                client,
                model="ref",
                messages=MESSAGES,
                continue_final_message=True,
                add_generation_prompt=True,
            ).collect()
        assert info.value.status_code == 400
        with pytest.raises(InvalidRequestError):
            openai_chat(client, model="ref", messages=MESSAGES, n=2)
        with pytest.raises(InvalidRequestError):
            openai_completion(client, model="ref", prompt="x", stream=False)


async def test_unknown_fields_are_sent_unchanged(baseline_server: ReferenceServer) -> None:
    seen: list[dict[str, Any]] = []

    def plan(info: RequestInfo) -> None:
        seen.append(info.body)

    async with ReferenceServer(faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            await openai_completion(
                client, model="ref", prompt="x", max_tokens=3, top_k=1, extra_body={"min_p": 0.1}
            ).collect()
    assert seen[0]["top_k"] == 1 and seen[0]["min_p"] == 0.1 and seen[0]["stream"] is True
    assert "extra_body" not in seen[0]
    assert msgspec.json.encode(seen[0])


@pytest.mark.parametrize("kind", ["chat", "completion"])
async def test_events_split_over_many_reads_count_only_text_chunks(
    baseline_server: ReferenceServer, kind: str
) -> None:
    """The role-only, finish and usage events arrive in reads of their own: none of them
    is counted as a token, and the caller still gets one final chunk."""
    expected = await unbroken(baseline_server, kind)
    upstream = f"127.0.0.1:{baseline_server.port}"
    async with ChaosProxy(
        upstream, ["slicer:average_size=24,size_variation=16,delay=100"]
    ) as proxy:
        async with StreamClient(proxy.url, config=StreamConfig(http2=False, **FAST)) as client:
            stream = open_stream(client, kind)
            chunks = [c async for c in stream]
    assert texts(chunks) == expected
    assert [c.done for c in chunks] == [False] * N + [True]
    assert stream.result.eval_count == N
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == N
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_role_is_given_once_even_across_resumes(baseline_server: ReferenceServer) -> None:
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=CUT)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as client:
            chunks = [c async for c in open_stream(client, "chat")]
    roles = [c.choices[0].delta.role for c in chunks if c.choices]
    assert roles[0] == "assistant" and roles[1:] == [None] * (len(roles) - 1)
