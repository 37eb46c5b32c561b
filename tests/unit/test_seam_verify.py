"""Verified seams without sockets: the overlap held back, and what a continuation proves."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from resilient_stream.resume.verify import SeamCheck, choose_overlap

TOKEN = re.compile(r"\s*\S+|\s+")


def pieces(text: str) -> list[str]:
    """Word tokens with their leading whitespace, as BPE models emit them."""
    return TOKEN.findall(text)


def overlap(text: str, *, min_chars: int, max_chars: int = 64, keep: int = 0) -> int:
    return choose_overlap(text, pieces(text), min_chars=min_chars, max_chars=max_chars, keep=keep)


def feed_all(check: SeamCheck, pieces: list[str]) -> str:
    out = "".join(check.feed(p) for p in pieces)
    return out + check.flush()


# --- choosing the overlap -------------------------------------------------------------


def test_a_short_answer_is_held_back_whole() -> None:
    assert overlap("Hi there", min_chars=16) == 8


def test_the_overlap_starts_where_a_word_starts() -> None:
    text = "The sky is blue because of Rayleigh scattering of sunlight"
    h = overlap(text, min_chars=16)
    assert h >= 16 and text[-h].isspace()
    assert text[-h:] == "".join(pieces(text)[-3:])  # whole chunks: " scattering of sunlight"


def test_the_overlap_is_never_also_the_beginning_of_the_answer() -> None:
    text = "| - | - |\n" * 12  # periodic: most tails are also prefixes
    h = overlap(text, min_chars=16)
    assert not text.startswith(text[-h:])


def test_text_without_spaces_still_gets_an_overlap() -> None:
    chunks = ["世界", "和平"] * 10 + ["🚀"]
    text = "".join(chunks)
    h = choose_overlap(text, chunks, min_chars=16, max_chars=64)
    assert 16 <= h <= 41 and h % 2 == 1  # whole chunks: the emoji and pairs of CJK


def test_a_request_after_a_seam_carries_more_than_the_one_before() -> None:
    text = "Hello big world"
    assert overlap(text, min_chars=16) == len(text)  # the first seam may hold all back
    assert overlap(text, min_chars=16, keep=1) == len(" big world")  # then it must not
    assert overlap(text, min_chars=16, keep=9) == len(" world")
    assert overlap(text, min_chars=16, keep=15) == 0  # nothing left to hold back


# --- checking a continuation ---------------------------------------------------------


def test_a_continuation_that_regenerates_the_overlap_is_verified() -> None:
    delivered = "Once upon a time there was"
    check = SeamCheck(delivered, 4)  # " was"
    assert check.feed(" w") == ""
    assert check.feed("as a king") == " a king"
    assert check.verified and not check.restart and check.cut == 4


def test_a_continuation_that_differs_in_the_overlap_diverges_and_cuts_nothing() -> None:
    check = SeamCheck("Once upon a time there was", 4)
    assert feed_all(check, [" is", " a king"]) == ""
    assert check.diverged and not check.verified and check.cut == 0
    assert check.held == " is a king"  # kept for the caller's decision, not trimmed


def test_a_restart_is_recognised_exactly_and_dropped_once() -> None:
    delivered = "The answer is 42 because"
    check = SeamCheck(delivered, overlap(delivered, min_chars=8))
    out = feed_all(check, ["The answer", " is 42 because", " of reasons"])
    assert out == " of reasons"
    assert check.verified and check.restart and check.cut == len(delivered)


def test_a_restart_that_changes_its_mind_is_a_divergence() -> None:
    check = SeamCheck("The answer is 42 because", 8)
    feed_all(check, ["The answer is 43"])
    assert check.diverged


def test_an_attempt_that_ends_inside_the_overlap_diverges() -> None:
    check = SeamCheck("Once upon a time there was", 4)
    assert feed_all(check, [" w"]) == ""
    assert check.diverged


def test_without_delivered_text_there_is_nothing_to_check() -> None:
    check = SeamCheck("", 0)
    assert check.resolved and check.feed("new") == "new"


def test_no_overlap_passes_new_text_unless_it_reproduces_the_answer() -> None:
    check = SeamCheck("Hello", 0)
    assert check.feed(" world") == " world" and check.verified and check.cut == 0
    again = SeamCheck("Hello", 0)
    assert feed_all(again, ["Hel", "lo", "!"]) == "!" and again.restart


@given(
    st.text(min_size=1, max_size=80),
    st.text(max_size=40),
    st.integers(min_value=1, max_value=8),
    st.lists(st.integers(min_value=1, max_value=7), max_size=30),
)
def test_any_split_of_a_true_continuation_verifies_and_yields_exactly_the_new_text(
    answer: str, new: str, min_chars: int, cuts: list[int]
) -> None:
    """Deterministic server: the continuation of answer[:-h] is answer[-h:] + new."""
    h = choose_overlap(answer, list(answer), min_chars=min_chars, max_chars=64)
    continuation = answer[len(answer) - h :] + new
    pieces, i = [], 0
    for c in cuts:
        pieces.append(continuation[i : i + c])
        i += c
    pieces.append(continuation[i:])
    check = SeamCheck(answer, h)
    out = feed_all(check, pieces)
    assert check.verified
    if not check.restart:
        assert out == new
    else:  # the continuation also reproduced the whole answer: dropped exactly once
        assert answer + out == continuation or out == continuation[len(answer) :]
