"""Token accounting of the assembler and the Ollama planner together (no sockets).

A simulated deterministic server answers each planned request: it continues
the one answer after the text the request carries, generates at most the
``num_predict`` asked, groups its tokens into chunks of any size (as llama.cpp
does for multi-byte text) and reports its count only in the final chunk, like
Ollama, or also on every chunk. Up to three cuts per stream. Whatever the
grouping and the cuts: no request asks for more than is left after the
tokens it carries, the caller never gets more than ``num_predict`` tokens,
and the count reported is the server's when it can be, an upper bound (and
said to be one) when not.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from resilient_stream.formats.ollama.planner import ResumePlanner
from resilient_stream.formats.ollama.types import GenerateChunk, GenerateRequest
from resilient_stream.formats.plan import AttemptPlan, Finished
from resilient_stream.resume.accounting import bytes_bound, utf8_bound
from resilient_stream.resume.assembler import StreamAssembler

PROMPT = "P:"
VOCAB = [" a", " word", "x", "é", "日本", "🚀", "\n", ".", " 👍🏽"]


def true_count(text: str, tokens: list[str]) -> int:
    joined = ""
    for k, t in enumerate(tokens):
        if joined == text:
            return k
        joined += t
    assert joined == text
    return len(tokens)


def serve(
    plan: AttemptPlan, tokens: list[str], groups: list[int], running: bool, echo: bool = False
) -> tuple[list[GenerateChunk], int]:
    """The server's chunks for ``plan`` and how many tokens it was asked for. ``echo``:
    the first chunk repeats the text the request carried before its new tokens, which
    the counts leave out (llama-server does this with a chat prefill)."""
    body = msgspec.json.decode(plan.body)
    carried = body["prompt"][len(PROMPT) :]
    ask = body["options"]["num_predict"]
    start = true_count(carried, tokens)
    todo = tokens[start : start + ask]
    chunks, i, g = [], 0, 0
    while i < len(todo):
        n = groups[g % len(groups)]
        g += 1
        part = todo[i : i + n]
        i += len(part)
        head = carried if echo and g == 1 else ""
        chunks.append(
            GenerateChunk(response=head + "".join(part), eval_count=i if running else None)
        )
    reason = "length" if len(todo) == ask else "stop"
    chunks.append(GenerateChunk(done=True, done_reason=reason, eval_count=len(todo)))
    return chunks, ask


#: An answer's tokens, drawn from the vocabulary (they may repeat: periodic answers).
ANSWERS = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=60)
#: How the server streams it and how it breaks: chunk sizes (tokens per chunk, cycled),
#: the chunks each attempt gets before its cut, the caller's num_predict, and whether
#: the server counts every chunk or only the final one.
STREAMS = {
    "groups": st.lists(st.integers(1, 4), min_size=1, max_size=5),
    "cuts": st.lists(st.integers(0, 12), max_size=3),
    "limit": st.integers(1, 70),
    "running": st.booleans(),
}


@settings(max_examples=300, deadline=None)
@given(tokens=ANSWERS, **STREAMS)
def test_no_request_asks_more_than_is_left_and_the_total_stays_within_num_predict(
    tokens: list[str], groups: list[int], cuts: list[int], limit: int, running: bool
) -> None:
    check_stream(tokens, groups, cuts, limit, running)


#: Tokens that never repeat (each carries its position), with the vocabulary's bytes.
DISTINCT = ANSWERS.map(lambda ts: [t + str(i) for i, t in enumerate(ts)])

FOUND_TAIL = ["\n9", " 👍🏽10", " 👍🏽11"]


@example(tokens=[" w0", " w1", " w2"], groups=[1], cuts=[1, 1], limit=3, running=True)
@example(tokens=[" w0", " w1", " word", " w3"], groups=[1, 2], cuts=[2], limit=4, running=True)
# found by the random runs, fixed in accounting.py: the echo covers the carried text only
@example(tokens=[f" a{i}" for i in range(6)], groups=[1, 2, 2], cuts=[3, 2], limit=6, running=True)
@example(tokens=[f" a{i}" for i in range(4)], groups=[1, 2], cuts=[2], limit=5, running=True)
@example(tokens=[f" a{i}" for i in range(4)], groups=[1, 2], cuts=[2, 2], limit=5, running=True)
@example(tokens=[f" a{i}" for i in range(10)], groups=[3, 4], cuts=[2, 2], limit=11, running=True)
# found by the random runs (2 of 25 runs of 3,000 draws), fixed in assembler.py: after a
# seam that put its count on the region's first piece, the overlap's own bound decides
# whether enough is left to regenerate it
@example(
    tokens=[*(f" a{i}" for i in range(4)), *(f" word{i}" for i in range(4, 9)), *FOUND_TAIL],
    groups=[3],
    cuts=[4, 1],
    limit=67,
    running=False,
)
# derandomized: the same 300 draws every run (a draw that finds a new gap is a bug to pin
# as an example, not a red CI by chance); the soak tier below draws at random
@settings(max_examples=300, deadline=None, derandomize=True)
@given(tokens=DISTINCT, **STREAMS)
def test_the_same_holds_against_a_server_that_echoes_what_the_request_carried(
    tokens: list[str], groups: list[int], cuts: list[int], limit: int, running: bool
) -> None:
    """The server repeats the text a request carried in its first chunk and leaves it
    out of its counts (llama-server does it with a chat prefill). The first two
    examples are the gaps fixed in 1d8baec (the echo delivered twice after two breaks
    at one point; a start over that kept an echo's bound), the next four the echo's
    counts (an over-ask of 2, a lost tokens_exact, a divergence). Answers here do not
    repeat themselves: for periodic ones see the next test."""
    check_stream(tokens, groups, cuts, limit, running, echo=True)


#: Gaps this test found, fixed in accounting.py and assembler.py: (1) with end-only
#: counts, an attempt cut right after an echo that reproduced all the delivered text kept
#: the carried text's bound besides the echo's in the count, so the next request asked 1
#: token with 55 left, could not regenerate the overlap and diverged on every attempt;
#: (2) a periodic answer whose echo and regenerated overlap are the same bytes.
@example(
    tokens=[" a"] * 14 + [" word", " a"],
    groups=[1, 1, 3, 1, 4],
    cuts=[8, 3],
    limit=16,
    running=True,
)
@example(tokens=[" a"] * 15 + ["x"], groups=[1, 1, 2, 4], cuts=[8, 3], limit=56, running=False)
@example(
    tokens=[" a0", "x1", "x2", "x3", "x4", "x5", "🚀6", " 👍🏽7", " a8", " a9"],
    groups=[2, 4],
    cuts=[4, 1],
    limit=63,
    running=False,
)
@settings(max_examples=300, deadline=None, derandomize=True)
@given(tokens=ANSWERS, **STREAMS)
def test_the_same_holds_against_an_echoing_server_on_answers_that_repeat_themselves(
    tokens: list[str], groups: list[int], cuts: list[int], limit: int, running: bool
) -> None:
    """Periodic answers (' a a a ...'): an echo of the carried text and a regenerated
    overlap can be the same bytes."""
    check_stream(tokens, groups, cuts, limit, running, echo=True)


@pytest.mark.soak
@pytest.mark.parametrize("tokens", [DISTINCT, ANSWERS])
def test_random_draws_against_an_echoing_server(tokens: st.SearchStrategy[list[str]]) -> None:
    """The echo properties above with 3,000 fresh random draws each run (opt-in:
    -m soak)."""

    @settings(max_examples=3000, deadline=None)
    @given(tokens=tokens, **STREAMS)
    def draw(
        tokens: list[str], groups: list[int], cuts: list[int], limit: int, running: bool
    ) -> None:
        check_stream(tokens, groups, cuts, limit, running, echo=True)

    draw()


def check_stream(
    tokens: list[str],
    groups: list[int],
    cuts: list[int],
    limit: int,
    running: bool,
    echo: bool = False,
) -> None:
    planner = ResumePlanner(
        GenerateRequest(model="m", prompt=PROMPT, raw=True, options={"num_predict": limit})
    )
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=3)
    plan: AttemptPlan | Finished = planner.initial()
    got: list[GenerateChunk] = []
    cuts = list(cuts)
    for _ in range(len(cuts) + 3):  # the cuts, then at most a start-over and its answer
        if isinstance(plan, Finished):
            got += asm.finish_locally(plan.done_reason)
            break
        assert isinstance(plan, AttemptPlan)
        asm.begin_attempt(plan)
        chunks, ask = serve(plan, tokens, groups, running, echo)
        carried = msgspec.json.decode(plan.body)["prompt"][len(PROMPT) :]
        assert ask <= limit - true_count(carried, tokens)  # never more than is left
        got += asm.accept(chunks[: cuts.pop(0)] if cuts else chunks)
        assert not asm.diverged  # a deterministic server: every seam verifies
        if asm.done:
            break
        # Cut, or ended by length with the budget maybe unspent (the final withheld).
        asm.interrupt(attempt=2, reason="cut", endpoint="e")
        plan = planner.next(asm.progress())
    assert asm.done
    text = "".join(c.response for c in got)
    assert text == asm.text
    n = true_count(text, tokens)
    assert n <= limit  # never more than the caller asked
    final = got[-1]
    assert final.done and final.eval_count is not None and final.eval_count <= limit
    if asm.tokens_exact:
        assert final.eval_count == n  # the server's count, the overlap counted once
    else:
        assert final.eval_count >= n  # an upper bound, never less
    # Never short either: the answer is the unbroken one, up to num_predict tokens.
    assert text == "".join(tokens[:limit])
    if running:  # the server counted every chunk
        assert asm.tokens_exact


def test_bounds_are_never_below_what_a_tokenizer_can_have_produced() -> None:
    # Every token is at least one byte: a 4-byte emoji may be 4 byte tokens.
    assert bytes_bound("🚀", "") == 4 and bytes_bound("", "") == 1
    assert bytes_bound("ab", "日") == 2 + 3
    # utf8: one token, plus one per continuation byte (tokens that end inside a char).
    assert utf8_bound("abc", "") == 1 and utf8_bound("日本", "") == 1 + 4


def test_each_openai_flavor_asks_for_the_counts_its_server_gives_and_bounds_the_rest() -> None:
    from resilient_stream.formats.openai.planner import OpenAIPlanner
    from resilient_stream.formats.openai.types import (
        CompletionChoice,
        CompletionChunk,
        CompletionRequest,
    )

    def resumed_ask(flavor: str) -> tuple[dict[str, object], int]:
        req = CompletionRequest(model="m", prompt="P", max_tokens=10)
        planner = OpenAIPlanner(req, flavor=flavor)  # type: ignore[arg-type]
        first = planner.initial()
        asm: StreamAssembler[CompletionChunk] = StreamAssembler(CompletionChunk, min_overlap=3)
        asm.begin_attempt(first)
        asm.accept([CompletionChunk(choices=[CompletionChoice(text=t)]) for t in ("Hello", " you")])
        asm.interrupt(attempt=2, reason="cut", endpoint="e")
        plan = planner.next(asm.progress())
        assert isinstance(plan, AttemptPlan)
        body = msgspec.json.decode(plan.body)
        assert body["prompt"] == "PHello"  # " you" held back
        return msgspec.json.decode(first.body), body["max_tokens"]

    # No counts from the server: "Hello" took at most 5 tokens (bytes), 1 by the utf8
    # rule that holds for llama-cpp-python's chunks.
    assert resumed_ask("generic")[1] == 10 - 5
    assert resumed_ask("llama-cpp-python")[1] == 10 - 1
    llamacpp, _ = resumed_ask("llamacpp")
    assert llamacpp["timings_per_token"] is True
    vllm, _ = resumed_ask("vllm")
    assert vllm["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_a_reported_bound_is_never_above_the_limit() -> None:
    """Bytes bound "日本🚀" at 10 tokens, but no request asked for more than num_predict:
    that bounds it too (found on llama-server: 570 reported for max_tokens=120)."""
    planner = ResumePlanner(
        GenerateRequest(model="m", prompt=PROMPT, raw=True, options={"num_predict": 3})
    )
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk)
    asm.begin_attempt(planner.initial())
    out = asm.accept([*gen_plain("日本", "🚀"), GenerateChunk(done=True, done_reason="stop")])
    assert out[-1].eval_count == 3 and asm.tokens == 3 and not asm.tokens_exact


def gen_plain(*texts: str) -> list[GenerateChunk]:
    return [GenerateChunk(response=t) for t in texts]


def test_a_server_echoing_the_carried_text_keeps_its_count_and_is_never_over_asked() -> None:
    """llama-server repeats a chat prefill in its first delta, merged with its first new
    token, and its running count covers only the new tokens. That echo reproduces the
    delivered text, so it is taken for a restart; the restart used to replace the
    carried text's count with the echo's (1), and each later request asked for too
    much (132 of 120 on the real server, three cuts)."""
    tokens = [f" w{i}" for i in range(20)]  # distinct: an echo, never a periodic overlap
    limit = 16
    planner = ResumePlanner(
        GenerateRequest(model="m", prompt=PROMPT, raw=True, options={"num_predict": limit})
    )
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=3)
    plan: AttemptPlan | Finished = planner.initial()
    got: list[GenerateChunk] = []
    cuts, asks = [3, 3, 3], []
    for _ in range(len(cuts) + 3):
        assert isinstance(plan, AttemptPlan)
        asm.begin_attempt(plan)
        chunks, ask = serve(plan, tokens, [1], running=True, echo=True)
        carried = msgspec.json.decode(plan.body)["prompt"][len(PROMPT) :]
        asks.append((true_count(carried, tokens), ask))
        assert ask <= limit - true_count(carried, tokens), asks  # never more than is left
        got += asm.accept(chunks[: cuts.pop(0)] if cuts else chunks)
        assert not asm.diverged
        if asm.done:
            break
        asm.interrupt(attempt=2, reason="cut", endpoint="e")
        plan = planner.next(asm.progress())
    assert asm.done and len(asks) == 4
    text = "".join(c.response for c in got)
    assert text == "".join(tokens[:limit])  # identical, never short
    assert got[-1].eval_count == limit and asm.tokens_exact
