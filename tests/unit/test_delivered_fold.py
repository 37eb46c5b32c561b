"""Long answers: delivered pieces folded as the stream goes, short ones shared (delivered.py).

A seam holds back at most ``max_overlap`` characters of whole chunks, so only the
pieces covering the last ``max_overlap + 1`` characters stay one per chunk; the
rest is one string with the sum of its counts. These check that the per-chunk
memory stays bounded on a long answer and that the accounting of
``test_accounting_budget`` still holds when seams come after folds (streams of
hundreds of chunks, where the small hypothesis streams there never fold).
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from test_accounting_budget import VOCAB, check_stream

from resilient_stream.resume.delivered import SHARED, SLACK, Delivered


def test_a_long_answer_keeps_a_bounded_tail_of_pieces_and_its_exact_counts() -> None:
    d = Delivered(span=21)
    for i in range(2000):
        d.add(f" w{i % 10}", None, 1)
        # 3-character pieces: 7 cover the last 21 characters; before them the folded
        # blocks, each at most half the one before (so at most log2 of the characters
        # so far, plus one), and at most SLACK (64) pieces waiting for the next fold:
        # not one piece per chunk.
        blocks = len(d.text) - 7 - SLACK
        assert blocks <= (3 * (i + 1)).bit_length()
    text, _ = d.joined()
    assert text == "".join(f" w{i % 10}" for i in range(2000))
    assert d.exact() and sum(d.text_n) == 2000
    assert d.tail_tokens(9, 0) == 3  # whole chunks: the last three
    assert d.head_exact(len(text) - 9, 0)


def test_folds_copy_each_character_a_logarithmic_number_of_times() -> None:
    """Every fold used to join the whole folded head again: a 100,000-token answer
    copied its text every SLACK chunks. Blocks halve in length from the first on."""
    d = Delivered(span=21)
    joined = 0
    for i in range(20_000):
        before = [id(p) for p in d.text]
        d.add(f" w{i % 10}", None, 1)
        if [id(p) for p in d.text] != before[: len(d.text)] or len(d.text) < len(before):
            new = set(map(id, d.text)) - set(before)
            joined += sum(len(p) for p in d.text if id(p) in new)
    chars = 3 * 20_000
    assert d.joined()[0] == "".join(f" w{i % 10}" for i in range(20_000))
    assert sum(d.text_n) == 20_000
    assert joined <= chars * (chars.bit_length() // 2)  # O(n log n), not O(n^2 / SLACK)
    lengths = [len(p) for p in d.text if len(p) > 3]
    assert all(a > b for a, b in pairwise(lengths))


def test_one_bound_in_the_folded_head_keeps_the_head_a_bound() -> None:
    d = Delivered(span=4)
    d.add("ab", None, -2)  # an upper bound
    for _ in range(200):
        d.add("c", None, 1)
    assert not d.exact()
    assert d.text_n[0] < 0 and sum(abs(c) for c in d.text_n) == 202
    assert d.tail_tokens(3, 0) == 3  # the tail is still exact, chunk by chunk


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(150, 500),
    seed=st.integers(0, 1000),
    groups=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    cuts=st.lists(st.integers(60, 400), min_size=1, max_size=3),
    running=st.booleans(),
)
def test_seams_after_folds_count_as_before(
    length: int, seed: int, groups: list[int], cuts: list[int], running: bool
) -> None:
    tokens = [VOCAB[(seed + 7 * i + i * i) % len(VOCAB)] for i in range(length)]
    check_stream(tokens, groups, cuts, length + 10, running)


def test_short_pieces_are_shared_across_streams_and_long_ones_kept_as_they_came() -> None:
    """Token texts repeat across streams: each stream's short pieces are the one
    interned string (held once per process, not once per stream), the text unchanged."""
    a, b = Delivered(257), Delivered(257)
    words = [" the", " cat", "é", " x" * (SHARED // 2)]
    long = "y" * (SHARED + 1)
    for d in (a, b):
        for w in [*words, long]:
            d.add("".join(list(w)), None, 1)  # a fresh string object, as a decoder makes
        d.add("", "".join(list(" hmm")), 1)
    assert a.joined() == b.joined() == ("".join(words) + long, " hmm")
    for x, y in zip(a.text[: len(words)], b.text[: len(words)], strict=True):
        assert x is y
    assert a.thinking[0] is b.thinking[0]
    assert a.text[-1] == b.text[-1] and a.text[-1] is not b.text[-1]
