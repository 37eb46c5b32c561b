"""The reference server's OpenAI-compatible endpoints, seen with a plain HTTP client:
the SSE wire shape, whole answers, continuation consistency, errors and faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from resilient_stream.formats.sse import SseParser
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer

pytestmark = pytest.mark.timeout(30)

MSGS = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as client:
            yield client


def events(body: bytes) -> list[bytes]:
    return [e.data for e in SseParser().feed(body)]


async def test_streamed_chat_is_sse_with_role_tokens_finish_usage_done(
    http: httpx.AsyncClient,
) -> None:
    body = {"model": "m", "messages": MSGS, "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.content.endswith(b"\n\n")
    data = events(r.content)
    assert data[-1] == b"[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = [c["choices"][0]["delta"]["content"] for c in chunks[1:6]]
    assert len(tokens) == 5 and all(tokens)
    assert chunks[6]["choices"][0] == {
        "index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"
    }  # fmt: skip
    assert chunks[7]["choices"] == [] and chunks[7]["usage"]["completion_tokens"] == 5
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


async def test_whole_answer_equals_the_streamed_tokens(http: httpx.AsyncClient) -> None:
    req = {"model": "m", "prompt": "Once", "max_tokens": 12}
    whole = (await http.post("/v1/completions", json=req)).json()
    streamed = await http.post("/v1/completions", json={**req, "stream": True})
    chunks = [json.loads(d) for d in events(streamed.content)[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert whole["object"] == "text_completion"
    assert whole["choices"][0]["text"] == text
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 12
    assert "usage" not in chunks[-1]  # no include_usage: no usage chunk


async def test_completion_continues_prompt_plus_partial(http: httpx.AsyncClient) -> None:
    async def text(prompt: str, n: int) -> str:
        r = await http.post(
            "/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": n}
        )
        return str(r.json()["choices"][0]["text"])

    full = await text("Once", 20)
    part = await text("Once", 8)
    assert full.startswith(part)
    assert await text("Once" + part, 12) == full[len(part) :]


async def test_chat_continues_a_trailing_assistant_message_like_api_chat(
    http: httpx.AsyncClient,
) -> None:
    async def chat(messages: list[dict[str, str]], n: int, **extra: Any) -> str:
        body = {"model": "m", "messages": messages, "max_tokens": n, **extra}
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["message"]["content"])

    full = await chat(MSGS, 20)
    part = await chat(MSGS, 7)
    prefill = [*MSGS, {"role": "assistant", "content": part}]
    assert await chat(prefill, 13) == full[len(part) :]
    vllm = {"continue_final_message": True, "add_generation_prompt": False}
    assert await chat(prefill, 13, **vllm) == full[len(part) :]
    ollama = await http.post("/api/chat", json={"model": "m", "messages": MSGS, "stream": False,
                                                "options": {"num_predict": 20}})  # fmt: skip
    assert ollama.json()["message"]["content"] == full


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/chat/completions", {"model": "missing-x", "messages": MSGS}, 404),
        ("/v1/chat/completions", {"model": "m", "messages": []}, 400),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": MSGS, "continue_final_message": True},
            400,
        ),
        ("/v1/chat/completions", {"model": "m", "messages": MSGS, "n": 2}, 400),
        ("/v1/completions", {"model": "m", "prompt": "x", "echo": True}, 400),
        ("/v1/completions", {"model": "m"}, 400),
    ],
)
async def test_bad_requests_get_openai_error_objects(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], status: int
) -> None:
    r = await http.post(path, json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["code"] == status


async def test_get_is_not_allowed_and_models_are_listed(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/completions")).status_code == 405
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "reference"


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_error_line_fault_is_an_sse_error_event(http2: bool) -> None:
    plan = FaultSchedule({0: Fault("error_line", after_tokens=3, message="boom")})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with httpx.AsyncClient(base_url=srv.url, http1=not http2, http2=http2) as client:
            body = {"model": "m", "prompt": "x", "max_tokens": 10, "stream": True}
            r = await client.post("/v1/completions", json=body)
    data = events(r.content)
    assert len(data) == 4 and b"[DONE]" not in data
    assert json.loads(data[-1])["error"] == {
        "message": "boom", "type": "server_error", "param": None, "code": 500
    }  # fmt: skip


async def test_status_fault_applies_to_openai_paths() -> None:
    plan = FaultSchedule({0: Fault("status", status=429, retry_after=1)})
    async with ReferenceServer(faults=plan) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as client:
            r = await client.post("/v1/completions", json={"model": "m", "prompt": "x"})
    assert r.status_code == 429 and r.headers["retry-after"] == "1"


def sse_text(body: bytes) -> tuple[list[dict[str, Any]], str, str]:
    """(chunks, content, reasoning) of an SSE stream, every chunk's text included."""
    chunks = [json.loads(d) for d in events(body)[:-1]]
    content = reasoning = ""
    for c in chunks:
        for choice in c["choices"]:
            delta = choice.get("delta", choice)
            content += delta.get("content", delta.get("text", "")) or ""
            reasoning += delta.get("reasoning_content") or ""
    return chunks, content, reasoning


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": MSGS}),  # ends by "stop"
        ("/v1/chat/completions", {"model": "m", "messages": MSGS, "max_tokens": 1}),
        ("/v1/chat/completions", {"model": "m", "messages": MSGS, "reasoning_effort": "low"}),
        ("/v1/completions", {"model": "m", "prompt": "Once", "max_tokens": 9}),
    ],
)
async def test_final_chunk_text_rides_in_the_finish_reason_chunk(
    path: str, body: dict[str, Any]
) -> None:
    async with ReferenceServer() as off, ReferenceServer(final_chunk_text=True) as on:
        async with httpx.AsyncClient() as c:
            req = {**body, "stream": True, "stream_options": {"include_usage": True}}
            plain, plain_text, plain_reasoning = sse_text(
                (await c.post(off.url + path, json=req)).content
            )
            carried, text, reasoning = sse_text((await c.post(on.url + path, json=req)).content)
    assert (text, reasoning) == (plain_text, plain_reasoning) and text
    assert len(carried) == len(plain) - 1
    assert carried[-1]["usage"] == plain[-1]["usage"]  # the same completion_tokens
    finish = carried[-2]["choices"][0]
    assert finish["finish_reason"] == plain[-2]["choices"][0]["finish_reason"]
    last_token = plain[-3]["choices"][0]
    if path == "/v1/chat/completions":
        assert finish["delta"] == {"content": last_token["delta"]["content"]}
    else:
        assert finish["text"] == last_token["text"] != ""
    if body.get("max_tokens") == 1 and "messages" in body:  # the role chunk still opens it
        assert carried[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert len(carried) == 3
