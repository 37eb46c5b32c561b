"""The openai SDK on ``ResilientTransport(openai_flavor="vllm")``: token-exact resume.

The toy server (``support/vllm_like.py``) follows the wire shape of vLLM's serving
code (``return_token_ids``), not a real vLLM; its model picks the next token from the
context's ids, so a resume by text that re-tokenizes differently at the seam changes
the continuation. With the flavor, the SDK's own request goes out asking for ids and
passes through; a resume re-prompts ``/v1/completions`` with the ids, under the SDK.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from support.vllm_like import ToyModel, VllmLike, render, tokens_of

from resilient_stream import StreamConfig, StreamResult
from resilient_stream.sdk import ResilientTransport

CFG = StreamConfig(http2=False, backoff_initial=0.01, backoff_max=0.02)
MESSAGES = [{"role": "user", "content": "hi"}]
PROMPT = "Once upon"
MAX = 40


async def sdk_text(
    srv: VllmLike, kind: str, flavor: str, results: list[StreamResult] | None = None
) -> tuple[str, list[Any]]:
    """The text the SDK streams, and its chunks (``results``: what on_resumed got)."""
    transport = ResilientTransport(
        config=CFG,
        openai_flavor=flavor,  # type: ignore[arg-type]
        on_resumed=None if results is None else results.append,
    )
    async with httpx.AsyncClient(transport=transport, timeout=None) as http:
        client = openai.AsyncOpenAI(
            base_url=srv.url + "/v1", api_key="x", http_client=http, max_retries=0
        )
        chunks: list[Any] = []
        if kind == "chat":
            chat = await client.chat.completions.create(
                model="m",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=MAX,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for c in chat:
                chunks.append(c)
            text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
        else:
            comp = await client.completions.create(
                model="m", prompt=PROMPT, max_tokens=MAX, stream=True
            )
            async for c in comp:
                chunks.append(c)
            text = "".join(ch.text for c in chunks for ch in c.choices)
        await client.close()
    return text, chunks


@pytest.mark.asyncio
@pytest.mark.parametrize("cuts", [[25], [20, 26]])
async def test_completions_resume_by_token_ids_under_the_sdk(cuts: list[int]) -> None:
    model = ToyModel(multibyte=False)  # "\n","\n" happens: text would re-tokenize it
    want = VllmLike(model=model).text_of(PROMPT, MAX)
    async with VllmLike(model=model, cuts=cuts) as srv:
        text, _ = await sdk_text(srv, "completions", "vllm")
    assert text == want
    first, *resumed = srv.bodies
    assert first["prompt"] == PROMPT and first["return_token_ids"] is True
    assert len(resumed) == len(cuts)
    prompt_ids = tokens_of(PROMPT)
    for body in resumed:
        prompt = body["prompt"]
        assert isinstance(prompt, list) and prompt[: len(prompt_ids)] == prompt_ids
        assert len(prompt) - len(prompt_ids) + body["max_tokens"] == MAX  # exact budget


@pytest.mark.asyncio
async def test_chat_resumes_by_token_ids_under_the_sdk_as_one_chat_stream() -> None:
    model = ToyModel(multibyte=True)  # "é" and "😀" as byte tokens
    want = VllmLike(model=model).text_of(render(MESSAGES), MAX)
    async with VllmLike(model=model, cuts=[22, 26]) as srv:
        text, chunks = await sdk_text(srv, "chat", "vllm")
    assert text == want
    assert srv.paths == ["/v1/chat/completions", "/v1/completions", "/v1/completions"]
    assert srv.bodies[0]["return_token_ids"] is True
    assert srv.bodies[0]["messages"] == MESSAGES  # the SDK's request, plus the flag
    # one chat stream for the SDK: one role, one id, the usage of all attempts
    assert sum(1 for c in chunks for ch in c.choices if ch.delta.role) == 1
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == MAX


@pytest.mark.asyncio
async def test_the_generic_flavor_of_the_same_cut_resumes_by_text() -> None:
    """What the flavor changes: without it the resume is prompt + text, so the ids of
    "\\n","\\n" come back as "\\n\\n" on some cut and the continuation differs there
    (the SDK has no field for the flag: ``on_resumed`` gets it)."""
    model = ToyModel(multibyte=False)
    want = VllmLike(model=model).text_of(PROMPT, MAX)
    differs = 0
    for cut in range(18, 32, 2):
        results: list[StreamResult] = []
        async with VllmLike(model=model, cuts=[cut]) as srv:
            text, _ = await sdk_text(srv, "completions", "generic", results)
        assert isinstance(srv.bodies[-1]["prompt"], str)
        differs += text != want
        # what the SDK cannot show, on_resumed does: identical or flagged, never silent
        (result,) = results
        assert result.resumes >= 1 and result.text == text
        assert text == want or not result.verified
        results = []
        async with VllmLike(model=model, cuts=[cut]) as srv:
            exact, _ = await sdk_text(srv, "completions", "vllm", results)
        assert exact == want and results[0].verified and results[0].resumes >= 1
    assert differs > 0
