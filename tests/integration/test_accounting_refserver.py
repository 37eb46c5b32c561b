"""Honest token accounting against the reference server (real sockets, server faults).

The server sends several tokens per chunk (``tokens_per_chunk=3``, what llama.cpp
does for multi-byte text) and is cut three times. Every resumed request must ask
for at most what is left after the text it carries, counted by the tokens the
server generated for it (the reference model is deterministic, so the true
tokens of any prefix are known here); the answer never holds more than the
caller asked; where the server reports its counts, the result's count is the
server's.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.openai import openai_chat, openai_completion
from resilient_stream.refserver import ReferenceServer
from resilient_stream.refserver import model as ref_model
from resilient_stream.refserver.faults import Fault, RequestInfo
from resilient_stream.refserver.settings import ServerSettings

N = 40
PROMPT = "Once upon a time"
CFG = StreamConfig(backoff_initial=0.0, backoff_max=0.0, max_attempts=10, retry_budget_ratio=1.0)


class Cuts:
    """A fault plan that records every request body and cuts the first three answers."""

    def __init__(self, after: tuple[int, ...] = (9, 6, 6)) -> None:
        self.after = after
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, info: RequestInfo) -> Fault | None:
        self.bodies.append(info.body)
        i = len(self.bodies) - 1
        return Fault("drop_connection", after_tokens=self.after[i]) if i < len(self.after) else None


def baseline_tokens() -> list[str]:
    gen = ref_model.Generation(PROMPT, num_predict=N, stop_probability=0.0)
    return [t for t, _ in ref_model.tokens(gen)]


def true_tokens(text: str, tokens: list[str]) -> int:
    """How many of the server's tokens make ``text`` (it ends on a token border)."""
    joined = ""
    for k, t in enumerate(tokens):
        if joined == text:
            return k
        joined += t
    assert joined == text, "not a prefix of the answer on a token border"
    return len(tokens)


def asked(body: dict[str, Any]) -> tuple[str, int]:
    """(text the request carried after the caller's prompt, tokens it asked for)."""
    if "messages" in body:  # a chat: the assistant prefill, if any
        last = body["messages"][-1]
        return (last["content"] if last["role"] == "assistant" else ""), body["max_tokens"]
    if "options" in body:
        return body["prompt"][len(PROMPT) :], body["options"]["num_predict"]
    return body["prompt"][len(PROMPT) :], body["max_tokens"]


def check_requests(cuts: Cuts, tokens: list[str]) -> list[tuple[int, int]]:
    """Each request asks for at most what is left; returns (carried tokens, asked)."""
    out = []
    for body in cuts.bodies:
        carried, n = asked(body)
        k = true_tokens(carried, tokens)
        assert n <= N - k, f"asked {n} after {k} carried tokens of {N}"
        out.append((k, n))
    return out


@pytest.mark.parametrize("report_tokens", [False, True])
async def test_multi_token_chunks_three_cuts_never_ask_more_than_is_left(
    report_tokens: bool,
) -> None:
    tokens = baseline_tokens()
    cuts = Cuts()
    async with (
        ReferenceServer(
            stop_probability=0.0, tokens_per_chunk=3, report_tokens=report_tokens, faults=cuts
        ) as srv,
        StreamClient(srv.url, config=CFG) as client,
    ):
        result = await client.generate(
            model="m", prompt=PROMPT, raw=True, options={"num_predict": N}
        ).collect()
    assert result.resumes == 3 and len(cuts.bodies) == 4
    steps = check_requests(cuts, tokens)
    assert result.done and result.verified
    # Never more than asked: the answer is a prefix of the unbroken one (deterministic
    # server), made of at most N of its tokens.
    got = true_tokens(result.text, tokens)
    assert got <= N and result.eval_count <= N
    if report_tokens:  # the server's counts: exactly what is left, the whole answer
        assert all(n == N - k for k, n in steps)
        assert result.text == "".join(tokens)
        assert result.eval_count == N and result.tokens_exact
    else:  # byte bounds: a resume asks for less than is left, or starts over ...
        assert all(n < N - k or (k, n) == (0, N) for k, n in steps[1:])
        assert (0, N) in steps[1:]
        # ... and is never short: the whole unbroken answer, exactly counted at the end.
        assert result.text == "".join(tokens)
        assert result.eval_count == got if result.tokens_exact else result.eval_count > got


async def test_without_counts_a_resume_that_cannot_ask_starts_over_and_verifies() -> None:
    """Bytes bound the tokens of the text delivered; when they leave nothing certain to
    ask for, the resume holds back everything: the server regenerates the whole answer
    (counted by itself) and the seam checks all of it."""
    tokens = baseline_tokens()
    cuts = Cuts(after=(24,))
    async with (
        ReferenceServer(stop_probability=0.0, report_tokens=False, faults=cuts) as srv,
        StreamClient(srv.url, config=CFG) as client,
    ):
        result = await client.generate(
            model="m", prompt=PROMPT, raw=True, options={"num_predict": N}
        ).collect()
    assert [asked(b) for b in cuts.bodies] == [("", N), ("", N)]  # the second from scratch
    (seam,) = result.seams
    assert seam.verified and seam.overlap == len("".join(tokens[:24]))
    assert result.text == "".join(tokens)
    # The last attempt generated everything the caller has: its count is exact.
    assert result.eval_count == N and result.tokens_exact


async def test_llama_server_timings_give_exact_counts_on_multi_token_chunks() -> None:
    """flavor 'llamacpp' asks for ``timings_per_token``: every chunk says the running
    count, so the resumes ask for exactly what is left and usage is the server's."""
    tokens = baseline_tokens()
    cuts = Cuts()
    async with (
        ReferenceServer(
            stop_probability=0.0, tokens_per_chunk=3, report_tokens=False, faults=cuts
        ) as srv,
        StreamClient(srv.url, config=CFG) as client,
    ):
        stream = openai_completion(
            client,
            model="m",
            prompt=PROMPT,
            max_tokens=N,
            stream_options={"include_usage": True},
            flavor="llamacpp",
        )
        chunks = [c async for c in stream]
        result = stream.result
    assert all(b.get("timings_per_token") is True for b in cuts.bodies)
    steps = check_requests(cuts, tokens)
    assert all(n == N - k for k, n in steps)
    assert result.text == "".join(tokens) and result.resumes == 3
    final = chunks[-1]
    assert final.usage is not None and final.usage.completion_tokens == N
    assert result.eval_count == N and result.tokens_exact


async def test_a_resume_that_ends_by_length_on_a_bound_starts_over_instead_of_ending_short() -> (
    None
):
    """Cut early: the bytes bound leaves room, so the resume carries the text and asks
    for less than is left; it ends by ``length`` with the budget maybe unspent. The
    stream does not end short: it starts over, and the server counts the whole answer."""
    tokens = baseline_tokens()
    cuts = Cuts(after=(6,))  # " day now.你 many which": " which" held back
    async with (
        ReferenceServer(stop_probability=0.0, report_tokens=False, faults=cuts) as srv,
        StreamClient(srv.url, config=CFG) as client,
    ):
        result = await client.generate(
            model="m", prompt=PROMPT, raw=True, options={"num_predict": N}
        ).collect()
    steps = check_requests(cuts, tokens)
    assert len(steps) == 3 and steps[0] == (0, N) and steps[2] == (0, N)
    k, n = steps[1]
    assert k > 0 and n < N - k  # carried, and asked by the bound
    assert "budget may not be spent" in result.history[1].outcome
    assert result.text == "".join(tokens) and result.verified
    assert result.eval_count == N and result.tokens_exact


@pytest.mark.parametrize(
    ("flavor", "report_tokens"),
    [
        ("llamacpp", False),  # timings_per_token: a running count on every chunk
        ("generic", False),  # usage only at the end: the carried text is bounded
    ],
)
async def test_a_server_that_echoes_the_prefill_is_resumed_identically_and_within_budget(
    flavor: str, report_tokens: bool
) -> None:
    """``echo_prefill``: the first delta repeats the assistant prefill before the new
    tokens, and the counts leave it out (llama-server). Three cuts: the answer is the
    unbroken one and no request asks more than is left. With running counts every seam
    verifies (the counts show the echo); with counts only at the end an echo and a
    restart of the answer in another context are the same bytes, so the seams are
    flagged (resume/assembler.py, ``_release``)."""
    cuts = Cuts()
    settings = ServerSettings(
        stop_probability=0.0, report_tokens=report_tokens, echo_prefill=True, faults=cuts
    )
    messages = [{"role": "user", "content": PROMPT}]
    async with (
        ReferenceServer(stop_probability=0.0) as base,
        ReferenceServer(settings=settings) as srv,
        StreamClient([base.url], config=CFG) as ref,
        StreamClient([srv.url], config=CFG) as client,
    ):
        baseline = openai_chat(ref, model="m", messages=messages, max_tokens=N)
        tokens = [t for chunk in [c async for c in baseline] for t in chat_texts(chunk)]
        stream = openai_chat(
            client,
            model="m",
            messages=messages,
            max_tokens=N,
            stream_options={"include_usage": True},
            flavor=flavor,  # type: ignore[arg-type]
        )
        result = await stream.collect()
    assert result.resumes == 3 and len(tokens) == N
    assert any(asked(b)[0] for b in cuts.bodies)  # resumed by a prefill, which is echoed
    for body in cuts.bodies:
        carried, n = asked(body)
        k = true_tokens(carried, tokens)
        assert n <= N - k, f"asked {n} after {k} carried tokens of {N}"
    assert result.text == "".join(tokens)
    assert result.verified == (flavor == "llamacpp")
    assert result.eval_count <= N


def chat_texts(chunk: Any) -> list[str]:
    return [c.delta.content for c in chunk.choices if c.delta.content]


async def test_echo_prefill_repeats_the_prefill_in_the_first_delta_and_counts_only_new_tokens() -> (
    None
):
    import httpx

    body = {
        "model": "m",
        "stream": True,
        "max_tokens": 3,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": "Once"},
        ],
    }
    settings = ServerSettings(stop_probability=0.0, report_tokens=False, echo_prefill=True)
    async with ReferenceServer(settings=settings) as srv, httpx.AsyncClient() as http:
        echoed = (await http.post(f"{srv.url}/v1/chat/completions", json=body)).text
    async with ReferenceServer(stop_probability=0.0) as srv, httpx.AsyncClient() as http:
        plain = (await http.post(f"{srv.url}/v1/chat/completions", json=body)).text

    def deltas(sse: str) -> tuple[list[str], int]:
        events = [
            msgspec.json.decode(line[6:]) for line in sse.splitlines() if line.startswith("data: {")
        ]
        texts = [c["delta"].get("content") or "" for e in events for c in e["choices"]]
        return [t for t in texts if t], events[-1]["usage"]["completion_tokens"]

    (first, *rest), n = deltas(echoed)
    (want_first, *want_rest), want_n = deltas(plain)
    assert first == "Once" + want_first and rest == want_rest
    assert n == want_n == 3
