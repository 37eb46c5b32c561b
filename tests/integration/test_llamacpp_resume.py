"""Token-exact resume on a llama-server-like endpoint, and chats through a chat template.

Real sockets on 127.0.0.1: the scripted server in ``support/llama_server_like.py``
has a toy model whose next token depends on the context's token ids, so text that
re-tokenizes differently at a seam ("\\n","\\n" vs "\\n\\n"; "é" as two byte tokens)
changes the continuation, as on a real model.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from support.llama_server_like import (
    BOS,
    CHAT_TEMPLATE,
    LlamaServerLike,
    ToyModel,
    prompt_ids,
    render,
    token_bytes,
)

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.capabilities import CapabilityCache, detect_capabilities
from resilient_stream.errors import ResumeDivergedError
from resilient_stream.openai import openai_chat, openai_completion

CFG = StreamConfig(http2=False, backoff_initial=0.01, backoff_max=0.02)
PROMPT = "Once upon"
MAX = 40


def unbroken(model: ToyModel, prompt: Any, n: int) -> str:
    srv = LlamaServerLike(model=model)
    ids, _ = srv.generate(prompt_ids(prompt), n)
    return b"".join(token_bytes(t) for t in ids).decode()


async def run_completion(srv: LlamaServerLike, flavor: str, max_tokens: int = MAX) -> Any:
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


@pytest.mark.asyncio
@pytest.mark.parametrize("cuts", [[25], [20, 24, 22], [30, 18]])
async def test_token_exact_resume_is_identical_and_sends_the_generated_ids(cuts: list[int]) -> None:
    model = ToyModel(multibyte=False)  # "\n","\n" happens; every id is streamed
    want = unbroken(model, PROMPT, MAX)
    async with LlamaServerLike(model=model, cuts=cuts) as srv:
        result = await run_completion(srv, "llama-server")
    assert result.text == want
    assert result.verified and result.resumes == len(cuts)
    # counted from the server's counts (tokens_predicted), each token once
    assert result.eval_count == MAX and result.tokens_exact
    assert set(srv.paths) == {"/completion"}
    first, *resumed = srv.bodies
    assert first["prompt"] == PROMPT and first["return_tokens"] is True
    assert resumed
    for body in resumed:
        prompt = body["prompt"]  # the overlap (>= 16 chars) is held back: ids remain
        assert prompt[0] == PROMPT and all(isinstance(t, int) for t in prompt[1:])
        # exact budget: the ids carried plus what is asked is the caller's max_tokens
        assert len(prompt) - 1 + body["n_predict"] == MAX
    # the server never generated more for the caller than asked: what each attempt
    # delivered beyond the ids the next one carried is regenerated overlap only
    assert (
        len(prompt_ids(resumed[-1]["prompt"])) - len(prompt_ids(PROMPT)) + srv.generated[-1] == MAX
    )


@pytest.mark.asyncio
async def test_text_resume_of_the_same_cut_is_not_identical() -> None:
    """The failure the token path removes: the same cut, resumed with prompt + text,
    re-tokenizes "\\n","\\n" as "\\n\\n" and the toy model continues differently."""
    model = ToyModel(multibyte=False)
    want = unbroken(model, PROMPT, MAX)
    differs = 0
    for cut in range(18, 30, 2):  # below 16 events everything is held back: a restart
        async with LlamaServerLike(model=model, cuts=[cut]) as srv:
            result = await run_completion(srv, "llamacpp")
        assert srv.paths[-1] == "/v1/completions"
        assert result.text == want or not result.verified  # flagged, never silent
        differs += result.text != want
        async with LlamaServerLike(model=model, cuts=[cut]) as srv:
            exact = await run_completion(srv, "llama-server")
        assert exact.text == want and exact.verified
    assert differs > 0


@pytest.mark.asyncio
async def test_pieces_whose_ids_the_stream_left_out_are_regenerated_from_exact_ids() -> None:
    """ "é" and "😀" come as one event with only the last id (llama-server holds back the
    events of an incomplete UTF-8 character). The resume prompt stops before the first
    such piece and the server regenerates the rest of the kept text, which the planner
    checks and drops: identical where sending "é" back as text would not be."""
    model = ToyModel(multibyte=True, newlines=False)
    want = unbroken(model, PROMPT, MAX)
    assert "é" in want and "😀" in want
    replayed = 0
    for cut in range(19, 30, 3):
        async with LlamaServerLike(model=model, cuts=[cut]) as srv:
            result = await run_completion(srv, "llama-server")
        assert result.text == want and result.verified
        assert result.eval_count == MAX  # the replayed tokens are not counted twice
        prompt = srv.bodies[1]["prompt"]
        assert isinstance(prompt, list) and all(isinstance(t, int) for t in prompt[1:])
        carried = b"".join(token_bytes(t) for t in prompt[1:]).decode()
        kept = result.text[: result.seams[0].offset - result.seams[0].overlap]
        assert kept.startswith(carried) and "é" not in carried
        replayed += kept != carried
    assert replayed > 0
    # and the text fallback (what a replay that differs falls back to) is not exact here
    async with LlamaServerLike(model=model, cuts=[25]) as srv:
        async with StreamClient(srv.url, config=CFG) as client:
            stream = openai_completion(
                client, model="m", prompt=PROMPT, max_tokens=MAX, flavor="llamacpp"
            )
            text_path = await stream.collect()
    assert text_path.text != want and not text_path.verified


@pytest.mark.asyncio
async def test_chat_through_the_template_is_token_exact_on_llama_server() -> None:
    model = ToyModel(multibyte=False)
    messages = [{"role": "user", "content": "hi"}]
    want = unbroken(model, render(messages), MAX)
    async with LlamaServerLike(model=model, cuts=[22, 26]) as srv:
        async with StreamClient(srv.url, config=CFG) as client:
            caps = await detect_capabilities(client, cache=CapabilityCache())
            stream = openai_chat(
                client,
                model="m",
                messages=messages,
                flavor=caps.flavor,
                chat_template=caps.template(),
                max_tokens=MAX,
            )
            chunks = [c async for c in stream]
            result = stream.result
    assert caps.server == "llama-server" and caps.chat_template == CHAT_TEMPLATE
    assert result.text == want and result.verified and result.resumes == 2
    assert result.eval_count == MAX and result.tokens_exact
    assert srv.paths == ["/completion"] * 3
    assert srv.bodies[0]["prompt"] == render(messages)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(c.choices[0].delta.role is not None for c in chunks) == 1
    assert chunks[-1].done and chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.asyncio
async def test_chat_on_a_server_that_closes_the_turn_resumes_through_completions() -> None:
    """Like llama-cpp-python: a prefill is closed, so the resumed chat restarts (flagged);
    with the caller's template the resume goes to /v1/completions and continues."""
    model = ToyModel(multibyte=False, newlines=False)  # text re-tokenizes exactly
    messages = [{"role": "user", "content": "hi"}]
    want = unbroken(model, render(messages), MAX)

    async def chat(template: Any) -> tuple[Any, LlamaServerLike]:
        async with LlamaServerLike(model=model, cuts=[25]) as srv:
            async with StreamClient(srv.url, config=CFG) as client:
                stream = openai_chat(
                    client, model="m", messages=messages, chat_template=template, max_tokens=MAX
                )
                return await stream.collect(), srv

    prefill, srv = await chat(None)
    assert srv.paths == ["/v1/chat/completions"] * len(srv.paths)
    assert prefill.text != want and not prefill.verified  # a new answer: flagged

    templated, srv = await chat(CHAT_TEMPLATE)
    assert srv.paths[:2] == ["/v1/chat/completions", "/v1/completions"]
    # (this server counts no tokens, so a resume that ends by length may not have spent
    # the budget and the stream then starts over, counted: resume/accounting.py)
    assert templated.text == want and templated.verified
    assert srv.bodies[1]["prompt"].startswith(render(messages))


@pytest.mark.asyncio
async def test_a_restarted_chat_raises_when_divergence_raises() -> None:
    """``on_divergence="raise"``: the new answer of a server that closes the turn is
    not delivered; the caller gets ResumeDivergedError with what it has."""
    model = ToyModel(multibyte=False, newlines=False)
    messages = [{"role": "user", "content": "hi"}]
    cfg = msgspec.structs.replace(CFG, on_divergence="raise")
    async with LlamaServerLike(model=model, cuts=[25]) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            stream = openai_chat(client, model="m", messages=messages, max_tokens=MAX)
            got: list[str] = []
            with pytest.raises(ResumeDivergedError) as info:
                async for chunk in stream:
                    got += [c.delta.content or "" for c in chunk.choices]
    assert info.value.delivered == "".join(got) and got
    assert srv.paths == ["/v1/chat/completions"] * 2  # cut, then the restart: no more


@pytest.mark.asyncio
async def test_capabilities_are_detected_once_per_base_url() -> None:
    cache = CapabilityCache()
    async with LlamaServerLike() as srv, StreamClient(srv.url, config=CFG) as client:
        first = await detect_capabilities(client, cache=cache)
        again = await detect_capabilities(client, srv.url + "/", cache=cache)
        probes = len(srv.server.requests) if srv.server else 0
    assert first is again and cache.detections == 1
    assert first.token_ids and first.flavor == "llama-server" and first.version == "b0-fake"
    assert probes == 3  # /props, /api/version, /v1/models: once
    assert BOS == 300
