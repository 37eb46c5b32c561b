"""Stream assembly over verified seams: no repeated, no missing text, and a seam that
does not verify is flagged, never trimmed on a guess (no sockets).

A deterministic server is simulated: given the text a request carries (the
progress after the held-back overlap is removed), it sends the rest of the one
answer, split anyhow.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.formats.ollama.types import ChatChunk, GenerateChunk, Message
from resilient_stream.formats.plan import AttemptPlan
from resilient_stream.resume.assembler import StreamAssembler

PLAN = AttemptPlan("/api/generate", b"", GenerateChunk)
DONE = GenerateChunk(done=True, done_reason="stop")


def gen(*texts: str) -> list[GenerateChunk]:
    """One token per chunk, each chunk with the request's running ``eval_count`` (as the
    reference server sends it), so the assembler's counts are the server's."""
    return [GenerateChunk(response=t, eval_count=i) for i, t in enumerate(texts, 1)]


def resume(asm: StreamAssembler[GenerateChunk], answer: list[str]) -> list[GenerateChunk]:
    """The deterministic server's answer to the request the assembler plans: the
    tokens of ``answer`` after the text the request carries (token-aligned or not)."""
    carried = asm.progress().text
    whole = "".join(answer)
    assert whole.startswith(carried)
    asm.interrupt  # noqa: B018 - (documentation: interrupt() came first)
    asm.begin_attempt(PLAN)
    rest, pos, out = whole[len(carried) :], 0, []
    for t in answer:  # re-split the rest on the answer's own token boundaries
        start, end = pos, pos + len(t)
        pos = end
        if end <= len(carried):
            continue
        out.append(t[max(0, len(carried) - start) :])
    assert "".join(out) == rest
    return gen(*out)


@settings(max_examples=300, deadline=None)
@given(
    tokens=st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    min_overlap=st.integers(1, 20),
)
def test_any_cut_points_reassemble_to_the_unbroken_answer_with_every_seam_verified(
    tokens: list[str], cuts: list[int], min_overlap: int
) -> None:
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=min_overlap)
    asm.begin_attempt(PLAN)
    got: list[GenerateChunk] = []
    pending = gen(*tokens)
    for cut in sorted(cuts):
        cut = min(cut, len(pending))
        got += asm.accept(pending[:cut])
        got += asm.interrupt(attempt=2, reason="test", endpoint="e")
        pending = resume(asm, tokens)
    got += asm.accept(pending)
    got += asm.accept([DONE])
    assert "".join(c.response for c in got) == "".join(tokens)
    assert asm.text == "".join(tokens)
    assert not asm.diverged
    # Every seam verified, except one that could hold nothing back: its attempt broke
    # right after regenerating the overlap, and the next request must carry more.
    assert all(s.verified or s.superseded or s.overlap == 0 for s in asm.seams)
    assert got[-1].done and got[-1].eval_count == len(tokens)  # overlap counted once


def test_the_overlap_is_held_back_from_the_request_and_checked() -> None:
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=4)
    asm.begin_attempt(PLAN)
    asm.accept(gen("Hello", " big", " world"))
    asm.interrupt(attempt=2, reason="ConnectionLostError: x", endpoint="http://a")
    progress = asm.progress()
    assert progress.text == "Hello big" and progress.tokens == 2  # " world" held back
    asm.begin_attempt(PLAN)
    out = asm.accept(gen(" world", "!"))
    out += asm.accept([DONE])
    assert [c.response for c in out] == ["!", ""]
    (seam,) = asm.seams
    assert (seam.offset, seam.tokens, seam.attempt, seam.overlap, seam.cut) == (15, 3, 2, 6, 6)
    assert seam.verified and asm.text == "Hello big world!"
    assert out[-1].eval_count == 4


def test_periodic_output_is_not_halved() -> None:
    """The old echo cutter deleted half of '| - | - |' x 12 against a deterministic
    server; a verified seam delivers it whole."""
    row = ["|", " -", " |", " -", " |", "\n"]
    tokens = row * 12
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk)
    asm.begin_attempt(PLAN)
    got = asm.accept(gen(*tokens[:30]))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    got += asm.accept(resume(asm, tokens))
    got += asm.accept([DONE])
    assert "".join(c.response for c in got) == "| - | - |\n" * 12
    assert asm.verified


def test_a_continuation_that_differs_in_the_overlap_is_flagged_not_trimmed() -> None:
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=4)
    asm.begin_attempt(PLAN)
    asm.accept(gen("Hello", " big", " world"))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    asm.begin_attempt(PLAN)
    out = asm.accept(gen(" planet", " and more"))
    assert out == [] and asm.diverged  # nothing of it reaches the caller
    assert asm.diverged_continuation().startswith(" planet")
    asm.continue_unverified()
    assert asm.progress().text == "Hello big world"  # everything delivered, nothing cut
    assert asm.progress().tokens == 3
    asm.begin_attempt(PLAN)
    out = asm.accept(gen("!")) + asm.accept([DONE])
    assert [c.response for c in out] == ["!", ""]
    (seam,) = asm.seams
    assert not seam.verified and not asm.verified and asm.text == "Hello big world!"


def test_a_server_that_restarts_its_answer_is_recognised_exactly_and_flagged() -> None:
    """A chat template that closes the assistant turn starts the answer again: the
    whole delivered text comes back first, and is dropped exactly once. The new answer
    comes from another context (the carried text as a closed turn), so it may leave the
    unbroken answer anywhere after the repeated text: the seam is flagged (found on
    llama-cpp-python, where such a restart read as verified and then differed)."""
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=4)
    asm.begin_attempt(PLAN)
    asm.accept(gen("The", " sky", " is"))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    assert asm.progress().text == "The"  # the request carries text: " sky is" held back
    asm.begin_attempt(PLAN)
    out = asm.accept(gen("The", " sky", " is", " blue")) + asm.accept([DONE])
    assert [c.response for c in out] == [" blue", ""]
    (seam,) = asm.seams
    assert seam.cut == len("The sky is") and not seam.verified and not asm.verified


def test_a_restart_after_a_request_that_carried_nothing_is_verified() -> None:
    """A start over (nothing carried) regenerates the answer in its own context."""
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=40)
    asm.begin_attempt(PLAN)
    asm.accept(gen("The", " sky", " is"))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    assert asm.progress().text == ""  # all of it held back
    asm.begin_attempt(PLAN)
    out = asm.accept(gen("The", " sky", " is", " blue")) + asm.accept([DONE])
    assert [c.response for c in out] == [" blue", ""] and asm.verified


def test_an_echo_the_counts_show_is_verified() -> None:
    """llama-server repeats a chat prefill in its first delta and leaves it out of its
    running counts: the counts show the same context went on, so the seam verifies."""

    def counted(*texts: str, start: int = 0) -> list[GenerateChunk]:
        return [GenerateChunk(response=t, eval_count=start + i + 1) for i, t in enumerate(texts)]

    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=4)
    asm.begin_attempt(PLAN)
    asm.accept(counted("The", " sky", " is"))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    asm.begin_attempt(PLAN)
    # "The" echoed (not counted), " sky is" regenerated (2 tokens), then " blue"
    echo = [GenerateChunk(response="The sky", eval_count=1), *counted(" is", " blue", start=1)]
    out = asm.accept(echo) + asm.accept([DONE])
    assert [c.response for c in out] == [" blue", ""]
    assert asm.verified and asm.tokens_exact and asm.tokens == 4


def test_a_restart_diverges_when_divergence_raises() -> None:
    """``on_divergence="raise"``: nothing of the other answer is delivered."""
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(
        GenerateChunk, min_overlap=4, raise_restarts=True
    )
    asm.begin_attempt(PLAN)
    asm.accept(gen("The", " sky", " is"))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    asm.begin_attempt(PLAN)
    assert asm.accept(gen("The", " sky", " is", " blue")) == []
    assert asm.diverged and asm.text == "The sky is"


def test_text_in_the_final_chunk_is_checked_like_any_other() -> None:
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=4)
    asm.begin_attempt(PLAN)
    asm.accept(gen("Hello", " world"))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    asm.begin_attempt(PLAN)
    out = asm.accept([GenerateChunk(response=" world!", done=True, done_reason="stop")])
    assert [c.response for c in out] == ["!"] and out[0].done
    assert asm.text == "Hello world!" and asm.verified


def test_a_break_before_the_seam_was_decided_is_superseded_by_the_next_seam() -> None:
    tokens = ["Once", " upon", " a", " time", " there", " was"]
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=4)
    asm.begin_attempt(PLAN)
    asm.accept(gen(*tokens[:4]))
    asm.interrupt(attempt=2, reason="cut", endpoint="e")
    asm.begin_attempt(PLAN)
    assert asm.accept(gen(" ti")) == []  # still checking the overlap " time"
    asm.interrupt(attempt=3, reason="cut again", endpoint="e")
    got = asm.accept(resume(asm, tokens)) + asm.accept([DONE])
    assert "".join(c.response for c in got) == " there was"
    first, second = asm.seams
    assert first.superseded and second.verified and asm.verified
    assert got[-1].eval_count == len(tokens)


def test_chat_thinking_is_held_back_while_no_content_came_yet() -> None:
    asm: StreamAssembler[ChatChunk] = StreamAssembler(ChatChunk, min_overlap=4)
    plan = AttemptPlan("/api/chat", b"", ChatChunk)
    asm.begin_attempt(plan)
    asm.accept(
        [
            ChatChunk(message=Message(thinking=t), eval_count=i)
            for i, t in enumerate(("let", " me", " think"), 1)
        ]
    )
    asm.interrupt(attempt=2, reason="r", endpoint="e")
    assert asm.progress().thinking == "let me" and asm.progress().text == ""
    asm.begin_attempt(plan)
    out = asm.accept(
        [
            ChatChunk(message=Message(thinking=" think"), eval_count=1),
            ChatChunk(message=Message(thinking=" more"), eval_count=2),
            ChatChunk(message=Message(content="Answer"), eval_count=3),
            ChatChunk(done=True),
        ]
    )
    assert asm.thinking == "let me think more" and asm.text == "Answer"
    assert asm.verified and out[-1].eval_count == 5  # 2 prefilled + 3 of the resumed attempt


def test_thinking_delivered_before_the_content_overlap_is_not_held_forever() -> None:
    """Content carries the overlap; the fully prefilled thinking must not hold the
    stream until its end (streaming goes on once the content overlap verified)."""
    asm: StreamAssembler[ChatChunk] = StreamAssembler(ChatChunk, min_overlap=4)
    plan = AttemptPlan("/api/chat", b"", ChatChunk)
    asm.begin_attempt(plan)
    asm.accept(
        [
            ChatChunk(message=Message(thinking="hmm")),
            ChatChunk(message=Message(content="The")),
            ChatChunk(message=Message(content=" end")),
        ]
    )
    asm.interrupt(attempt=2, reason="r", endpoint="e")
    asm.begin_attempt(plan)
    out = asm.accept(
        [ChatChunk(message=Message(content=" end")), ChatChunk(message=Message(content=" is near"))]
    )
    assert [c.message.content for c in out] == [" is near"]  # released before the end


def test_finish_locally_ends_with_a_done_chunk() -> None:
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk)
    asm.begin_attempt(PLAN)
    asm.accept([GenerateChunk(response="a")])
    (final,) = asm.finish_locally("length")
    assert final.done and final.done_reason == "length" and final.eval_count == 1
