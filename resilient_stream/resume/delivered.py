"""What the caller has received: the texts of delivered chunks and their token counts.

One job: keep the delivered text of both channels (content and thinking) as the
pieces the chunks brought, each with its signed token count (>= 0 the server's,
< 0 an upper bound, see :mod:`.accounting`), so that a seam can hold back whole
chunks and subtract exactly their tokens. Old pieces are folded into one (their
counts summed) as the stream goes: a seam never holds back more than
``max_overlap`` characters, so only the pieces that cover the last
``max_overlap + 1`` characters need to stay one per chunk. A long answer then
holds its text in one string plus a bounded tail of pieces, not a string object
and a count per token (about 70 bytes each).

This is the per-chunk path: :meth:`Delivered.add` is a few appends. A short piece
is kept as the interned string (``sys.intern``): token texts repeat across a
process's streams (a model's vocabulary is finite and skewed), so thousands of open
streams share one string per distinct token instead of holding one each (about
56 bytes a piece). Interned strings are freed with their last holder.
"""

from __future__ import annotations

from sys import intern

from .accounting import (
    Region,
    Regions,
    add_signed,
    all_exact,
    chars_of,
    head_counts,
    tail_start,
)

#: Pieces beyond the needed tail before they are folded (a fold every this many chunks).
SLACK = 64
#: Pieces up to this many characters are interned (longer ones rarely repeat).
SHARED = 24


def _fold(pieces: list[str], counts: list[int], chars: int, blocks: int) -> int:
    """Join the pieces after the first ``blocks`` (earlier folds) and before the last
    ones that cover ``chars`` characters into one block, in place (their counts summed,
    a bound if any of them is one); returns how many blocks lead the pieces now.

    The blocks before it that are not longer are joined with it: block lengths halve
    from the first on, as in a binary counter, so a character is copied about log2 of
    the answer's length times over a stream, not once a fold (an answer of 100,000
    tokens would otherwise copy its whole text every ``SLACK`` chunks). Any adjacent
    pieces before the tail may be joined: the count says nothing about the order
    within them, so ``blocks`` is only a hint of where to start."""
    i = tail_start(pieces, chars)[0]
    j = min(blocks, i)
    if i - j < 2:
        return j
    old = counts[j:i]
    total = sum(map(abs, old))
    n = -total if min(old) < 0 else total
    block = "".join(pieces[j:i])
    while j > 0 and len(pieces[j - 1]) <= len(block):
        j -= 1
        block = pieces[j] + block
        n = add_signed(counts[j], n)
    pieces[j:i] = [block]
    counts[j:i] = [n]
    return j + 1


class Delivered:
    """The delivered pieces of both channels and the tokens each took."""

    __slots__ = (
        "_fold_at",
        "_span",
        "_text_blocks",
        "_think_blocks",
        "orphan",
        "text",
        "text_n",
        "think_n",
        "thinking",
    )

    def __init__(self, span: int) -> None:
        self._span = span  # the last characters whose pieces stay one per chunk
        self._fold_at = SLACK  # fold once a channel has more pieces than this
        self._text_blocks = self._think_blocks = 0  # folded blocks leading each channel
        self.text: list[str] = []
        self.thinking: list[str] = []
        # Tokens of each piece, signed: >= 0 the server's count, < 0 an upper bound.
        self.text_n: list[int] = []
        self.think_n: list[int] = []
        self.orphan = 0  # signed tokens of text-less chunks since the last piece

    @property
    def started(self) -> bool:
        return bool(self.text) or bool(self.thinking)

    def fold(self) -> None:
        """Join old pieces (and their counts) into one, keeping the last ones a piece
        per chunk: a seam holds back whole chunks (at most ``max_overlap`` characters)
        and subtracts their counts. Then the next fold is due ``SLACK`` pieces later
        (pieces of one character each cannot be folded below ``max_overlap + 1``)."""
        self._text_blocks = _fold(self.text, self.text_n, self._span, self._text_blocks)
        self._think_blocks = _fold(self.thinking, self.think_n, self._span, self._think_blocks)
        self._fold_at = max(len(self.text), len(self.thinking)) + SLACK

    def joined(self) -> tuple[str, str]:
        """(text, thinking) as one string each."""
        return "".join(self.text), "".join(self.thinking)

    def add(self, text: str, thinking: str | None, n: int) -> None:
        """Keep a delivered chunk's texts; its count goes with its thinking if it has
        some (an overlap in the text then never takes it: the thinking is carried)."""
        if self.orphan:
            n = add_signed(n, self.orphan)
            self.orphan = 0
        if thinking:
            self.thinking.append(intern(thinking) if len(thinking) <= SHARED else thinking)
            self.think_n.append(n)
            n = 0
            if len(self.thinking) > self._fold_at:
                self.fold()
        if text:
            self.text.append(intern(text) if len(text) <= SHARED else text)
            self.text_n.append(n)
            if len(self.text) > self._fold_at:
                self.fold()
        elif not thinking:
            self.orphan = n

    def exact(self) -> bool:
        """Every delivered count is the server's."""
        return self.orphan >= 0 and all_exact(self.text_n) and all_exact(self.think_n)

    def bound(self) -> int:
        """The tokens all delivered text took, by its pieces' counts (an upper bound where
        any is one)."""
        return abs(self.orphan) + sum(map(abs, self.text_n)) + sum(map(abs, self.think_n))

    def head_exact(self, text_chars: int, think_chars: int) -> bool:
        """The counts of the first ``text_chars`` / ``think_chars`` characters are the
        server's (what a request carrying them would have been counted by)."""
        return all_exact(head_counts(self.text, self.text_n, text_chars)) and all_exact(
            head_counts(self.thinking, self.think_n, think_chars)
        )

    def tail_tokens(self, h_text: int, h_think: int) -> int:
        """Tokens of the chunks that carried the last ``h_text`` characters of text and
        the last ``h_think`` of thinking (and of text-less chunks after them): what the
        server generates again, so the request asks for that many more. Whole chunks,
        so this is exactly what the counts of the rest leave out."""
        count = self.orphan
        for pieces, counts, need in (
            (self.text, self.text_n, h_text),
            (self.thinking, self.think_n, h_think),
        ):
            i = len(pieces)
            while need > 0 and i > 0:
                i -= 1
                need -= len(pieces[i])
                count = add_signed(count, counts[i])
        return count  # signed: < 0 if any of it is a bound

    def regions(
        self, text_cut: int, think_cut: int, restart: bool, held: tuple[int, int] = (-1, -1)
    ) -> Regions:
        """The delivered pieces a seam's continuation regenerated, their counts zeroed
        (``held``: the characters the request held back, per channel). They point into
        the pieces: no fold until :meth:`settled`."""
        self._fold_at = 1 << 62
        if not restart:
            held = (-1, -1)
        return Regions(
            Region(self.text, self.text_n, chars_of(self.text) if restart else text_cut, held[0]),
            Region(
                self.thinking,
                self.think_n,
                chars_of(self.thinking) if restart else think_cut,
                held[1],
            ),
        )

    def settled(self) -> None:
        """The regions of a seam are settled: folding may go on."""
        self.fold()
