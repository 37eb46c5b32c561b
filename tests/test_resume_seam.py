"""Seam stitching and stream assembly: no repeated, no missing text (no sockets)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.formats.ollama.types import ChatChunk, GenerateChunk, Message
from resilient_stream.formats.plan import AttemptPlan
from resilient_stream.resume.assembler import StreamAssembler
from resilient_stream.resume.seam import SeamStitcher

PLAN = AttemptPlan("/api/generate", b"", GenerateChunk)


def feed_all(st_: SeamStitcher, pieces: list[str]) -> str:
    out = "".join(st_.feed(p) for p in pieces)
    return out + st_.flush()


def test_echoed_tail_is_cut() -> None:
    before = "The quick brown fox jumps over"
    stitcher = SeamStitcher(before, min_overlap=8)
    assert feed_all(stitcher, ["fox jumps", " over", " the lazy dog"]) == " the lazy dog"
    assert stitcher.cut == len("fox jumps over")


def test_short_coincidental_match_is_kept() -> None:
    stitcher = SeamStitcher("... and the", min_overlap=8)
    assert feed_all(stitcher, [" the", " end"]) == " the end"
    assert stitcher.cut == 0


def test_clean_continuation_passes_through_once_it_cannot_be_an_echo() -> None:
    stitcher = SeamStitcher("abcdefghijklmnopqrstuvwxyz", min_overlap=4)
    assert stitcher.feed("XY") == "XY"
    assert stitcher.resolved
    assert stitcher.feed("Z") == "Z"


def test_holding_is_bounded_by_max_overlap() -> None:
    before = "ab" * 100
    stitcher = SeamStitcher(before, min_overlap=4, max_overlap=10)
    out = stitcher.feed("ab" * 20)  # could echo forever; the bound forces a decision
    assert stitcher.resolved
    assert out == ("ab" * 20)[stitcher.cut :]
    assert stitcher.cut == 10


@settings(max_examples=300, deadline=None)
@given(
    full=st.text(min_size=1, max_size=60),
    data=st.data(),
)
def test_any_cut_point_and_any_echo_gives_the_unbroken_text(full: str, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(full)), label="cut")
    echo = data.draw(st.integers(0, k), label="echo")
    before, after = full[:k], full[k:]
    resent = before[k - echo :] + after  # the server repeats `echo` chars of the tail
    pieces_at = sorted(data.draw(st.lists(st.integers(0, len(resent)), max_size=6)))
    pieces = [resent[i:j] for i, j in zip([0, *pieces_at], [*pieces_at, len(resent)], strict=True)]
    stitcher = SeamStitcher(before, min_overlap=1)
    got = before + feed_all(stitcher, pieces)
    # With min_overlap=1 every echo is cut, but a continuation that happens to start
    # like the tail may be cut too; that is why the default min_overlap is 16.
    if echo > 0:
        assert got == full or stitcher.cut > echo
    # Whatever was cut is a real suffix of `before`: nothing invented, nothing reordered.
    assert before.endswith(resent[: stitcher.cut])


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=30),
    data=st.data(),
)
def test_assembler_joins_attempts_seamlessly_at_random_cut_points(
    tokens: list[str], data: st.DataObject
) -> None:
    """Any cut point, with an echo of the tail long enough to be recognised, reassembles
    to the unbroken stream."""
    k = data.draw(st.integers(0, len(tokens)), label="cut")
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=16)
    asm.begin_attempt(PLAN)
    got = asm.accept([GenerateChunk(response=t) for t in tokens[:k]])
    got += asm.interrupt(attempt=2, reason="test", endpoint="e")
    asm.begin_attempt(PLAN)
    before = "".join(tokens[:k])
    echo = before[-20:] if len(before) >= 20 else ""
    rest = [echo, *tokens[k:]] if echo else tokens[k:]
    got += asm.accept([GenerateChunk(response=t) for t in rest])
    got += asm.accept([GenerateChunk(done=True, done_reason="stop")])
    assert "".join(c.response for c in got) == "".join(tokens)
    assert asm.text == "".join(tokens)
    assert got[-1].done and got[-1].eval_count == asm.tokens
    assert len(asm.seams) == (1 if k > 0 else 0)


def test_assembler_records_seam_offsets_and_cut() -> None:
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk, min_overlap=4)
    asm.begin_attempt(PLAN)
    asm.accept([GenerateChunk(response="Hello "), GenerateChunk(response="world")])
    asm.interrupt(attempt=2, reason="ConnectionLostError: x", endpoint="http://a")
    asm.begin_attempt(PLAN)
    out = asm.accept([GenerateChunk(response="world"), GenerateChunk(response="!")])
    out += asm.accept([GenerateChunk(done=True)])
    assert [c.response for c in out] == ["!", ""]
    (seam,) = asm.seams
    assert (seam.offset, seam.tokens, seam.attempt, seam.cut) == (11, 2, 2, 5)
    assert asm.text == "Hello world!"


def test_chat_thinking_and_content_are_stitched_separately() -> None:
    asm: StreamAssembler[ChatChunk] = StreamAssembler(ChatChunk)
    plan = AttemptPlan("/api/chat", b"", ChatChunk)
    asm.begin_attempt(plan)
    asm.accept([ChatChunk(message=Message(thinking="let me think"))])
    asm.interrupt(attempt=2, reason="r", endpoint="e")
    asm.begin_attempt(plan)
    out = asm.accept(
        [
            ChatChunk(message=Message(thinking=" more")),
            ChatChunk(message=Message(content="Answer")),
            ChatChunk(done=True),
        ]
    )
    assert asm.thinking == "let me think more"
    assert asm.text == "Answer"
    assert out[-1].eval_count == 3


def test_finish_locally_ends_with_a_done_chunk() -> None:
    asm: StreamAssembler[GenerateChunk] = StreamAssembler(GenerateChunk)
    asm.begin_attempt(PLAN)
    asm.accept([GenerateChunk(response="a")])
    (final,) = asm.finish_locally("length")
    assert final.done and final.done_reason == "length" and final.eval_count == 1
