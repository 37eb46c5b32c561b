"""Token-exact resume on a vLLM-like server (``return_token_ids``), real sockets on 127.0.0.1.

The toy server (``support/vllm_like.py``) follows the wire shape of vLLM's serving
code, not a real vLLM; its model picks the next token from the context's *ids*, so
text that re-tokenizes differently at a seam ("\\n","\\n" vs "\\n\\n"; "é" as two byte
tokens) changes the continuation, as on a real model.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.vllm_like import EOS, ToyModel, VllmLike, render, tokens_of

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.openai import openai_chat, openai_completion

CFG = StreamConfig(http2=False, backoff_initial=0.01, backoff_max=0.02)
PROMPT = "Once upon"
MESSAGES = [{"role": "user", "content": "hi"}]
MAX = 40


def unbroken(model: ToyModel, prompt: Any, n: int = MAX, eos_at: int | None = None) -> str:
    return VllmLike(model=model, eos_at=eos_at).text_of(prompt, n)


async def completion(srv: VllmLike, flavor: str = "vllm", max_tokens: int = MAX) -> Any:
    async with StreamClient(srv.url, config=CFG) as client:
        stream = openai_completion(
            client,
            model="m",
            prompt=PROMPT,
            flavor=flavor,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            stream_options={"include_usage": True},
        )
        return await stream.collect()


async def chat(srv: VllmLike, max_tokens: int = MAX) -> tuple[Any, list[Any]]:
    async with StreamClient(srv.url, config=CFG) as client:
        stream = openai_chat(
            client,
            model="m",
            messages=MESSAGES,
            flavor="vllm",
            max_tokens=max_tokens,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        return stream.result, chunks


@pytest.mark.asyncio
@pytest.mark.parametrize("cuts", [[25], [20, 24, 22], [30, 18]])
async def test_completion_resume_by_ids_is_identical_and_counted_exactly(cuts: list[int]) -> None:
    model = ToyModel(multibyte=False)  # "\n","\n" happens
    want = unbroken(model, PROMPT)
    async with VllmLike(model=model, cuts=cuts) as srv:
        result = await completion(srv)
    assert result.text == want
    assert result.verified and result.resumes == len(cuts)
    assert result.eval_count == MAX and result.tokens_exact
    assert set(srv.paths) == {"/v1/completions"}
    first, *resumed = srv.bodies
    assert first["prompt"] == PROMPT and first["return_token_ids"] is True
    prompt_ids = tokens_of(PROMPT)
    for body in resumed:
        prompt = body["prompt"]
        assert body["return_token_ids"] is True and not body.get("echo")
        # the prompt's ids as vLLM gave them, then generated ids: nothing as text
        assert isinstance(prompt, list) and prompt[: len(prompt_ids)] == prompt_ids
        assert all(isinstance(t, int) for t in prompt)
        # exact budget: the ids carried plus what is asked is the caller's max_tokens
        assert len(prompt) - len(prompt_ids) + body["max_tokens"] == MAX
    # the last request carried ids and generated the rest: never more than asked
    assert len(resumed[-1]["prompt"]) - len(prompt_ids) + srv.generated[-1] == MAX


@pytest.mark.asyncio
async def test_the_text_path_of_the_same_cuts_is_not_identical() -> None:
    """What the ids remove: resumed with prompt + text, "\\n","\\n" re-tokenizes as
    "\\n\\n" and the continuation differs (flagged by the seam, never silent)."""
    model = ToyModel(multibyte=False)
    want = unbroken(model, PROMPT)
    differs = 0
    for cut in range(18, 32, 2):
        async with VllmLike(model=model, cuts=[cut], ids=False) as srv:
            text = await completion(srv)
        assert isinstance(srv.bodies[-1]["prompt"], str)  # the fallback sent text
        assert text.text == want or not text.verified  # flagged, never silent
        assert text.tokens_exact and text.eval_count <= MAX  # continuous_usage_stats
        differs += text.text != want
        async with VllmLike(model=model, cuts=[cut]) as srv:
            exact = await completion(srv)
        assert exact.text == want and exact.verified
    assert differs > 0


@pytest.mark.asyncio
async def test_multibyte_characters_whose_steps_stream_empty_text_resume_exactly() -> None:
    """vLLM streams the id of a step that ends inside a UTF-8 character with text "":
    the ids are complete (unlike llama-server), so "é" and "😀" go back as their bytes'
    ids, where sending them back as text re-tokenizes "é" as one token."""
    model = ToyModel(multibyte=True, newlines=False)
    want = unbroken(model, PROMPT)
    assert "é" in want and "😀" in want
    byte_ids = 0
    for cut in range(25, 40, 3):  # below ~16 characters everything is held back: a restart
        async with VllmLike(model=model, cuts=[cut]) as srv:
            result = await completion(srv)
        assert result.text == want and result.verified and result.eval_count == MAX
        prompt = srv.bodies[1]["prompt"]
        assert isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
        byte_ids += 0xC3 in prompt or 0xF0 in prompt  # "é"/"😀" as byte tokens
    assert byte_ids > 0
    differs = 0
    for cut in range(25, 40, 3):  # the same cuts on a vLLM without ids: the text path
        async with VllmLike(model=model, cuts=[cut], ids=False) as srv:
            text_path = await completion(srv)
        assert text_path.text == want or not text_path.verified  # flagged, never silent
        differs += text_path.text != want
    assert differs > 0


@pytest.mark.asyncio
async def test_a_stream_that_stops_by_itself_counts_the_eos_token() -> None:
    model = ToyModel(multibyte=False)
    eos_at = len(tokens_of(PROMPT)) + 30  # 30 tokens, then EOS
    want = unbroken(model, PROMPT, 100, eos_at)
    async with VllmLike(model=model, cuts=[20], eos_at=eos_at) as srv:
        result = await completion(srv, max_tokens=100)
    assert result.text == want and result.verified and result.done_reason == "stop"
    # 30 tokens + EOS, as vLLM counts them; the resume asked only for what was left
    assert result.eval_count == 31 and result.tokens_exact
    carried = len(srv.bodies[1]["prompt"]) - len(tokens_of(PROMPT))
    assert carried + srv.bodies[1]["max_tokens"] == 100
    assert srv.generated[1] + carried == 31
    assert EOS not in srv.bodies[1]["prompt"]


@pytest.mark.asyncio
@pytest.mark.parametrize("cuts", [[22], [22, 26]])
async def test_chat_resumes_through_completions_of_the_rendered_ids(cuts: list[int]) -> None:
    model = ToyModel(multibyte=True)
    want = unbroken(model, render(MESSAGES))
    async with VllmLike(model=model, cuts=cuts) as srv:
        result, chunks = await chat(srv)
    assert result.text == want and result.verified and result.resumes == len(cuts)
    assert result.eval_count == MAX and result.tokens_exact
    assert srv.paths == ["/v1/chat/completions"] + ["/v1/completions"] * len(cuts)
    assert srv.bodies[0]["return_token_ids"] is True
    rendered = tokens_of(render(MESSAGES))
    for body in srv.bodies[1:]:
        assert body["prompt"][: len(rendered)] == rendered
        assert len(body["prompt"]) - len(rendered) + body["max_tokens"] == MAX
    # the caller sees one chat stream: one role, the chat's id, a finish and usage
    assert sum(c.choices[0].delta.role is not None for c in chunks if c.choices) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {"chatcmpl-1"}
    final = chunks[-1]
    assert final.done and final.choices[0].finish_reason == "length"
    assert final.usage is not None and final.usage.completion_tokens == MAX


@pytest.mark.asyncio
async def test_chat_on_an_old_vllm_falls_back_to_prefill_flagged_or_identical() -> None:
    """Without ids the resume is the prefill of flavor "vllm" (continue_final_message):
    the toy model re-tokenizes the partial answer ("é" as one token), so it diverges,
    flagged."""
    model = ToyModel(multibyte=True)
    want = unbroken(model, render(MESSAGES))
    outcomes = set()
    prefills = 0
    for cut in range(18, 36, 4):
        async with VllmLike(model=model, cuts=[cut], ids=False) as srv:
            result, _ = await chat(srv)
        assert set(srv.paths) == {"/v1/chat/completions"}
        for body in srv.bodies[1:]:
            if body["messages"][-1]["role"] == "assistant":  # a prefill (not a restart)
                assert body["continue_final_message"] is True
                prefills += 1
        assert result.text == want or not result.verified  # never silently different
        assert result.tokens_exact and result.eval_count <= MAX
        outcomes.add(result.text == want)
    assert False in outcomes and prefills > 0


@pytest.mark.asyncio
async def test_a_callers_own_prefill_is_in_the_rendered_ids_and_not_repeated() -> None:
    model = ToyModel(multibyte=True)
    messages = [*MESSAGES, {"role": "assistant", "content": "Sure: "}]
    want = unbroken(model, render(messages, continue_final=True))
    async with VllmLike(model=model, cuts=[24]) as srv:
        async with StreamClient(srv.url, config=CFG) as client:
            stream = openai_chat(
                client,
                model="m",
                messages=messages,
                flavor="vllm",
                max_tokens=MAX,
                continue_final_message=True,
                add_generation_prompt=False,
            )
            result = await stream.collect()
    assert result.text == want and result.verified and result.resumes == 1
    assert srv.paths == ["/v1/chat/completions", "/v1/completions"]
    rendered = tokens_of(render(messages, continue_final=True))
    assert srv.bodies[1]["prompt"][: len(rendered)] == rendered
