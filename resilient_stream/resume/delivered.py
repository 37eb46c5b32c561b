"""What the caller has received: the texts of delivered chunks and their token counts.

One job: keep the delivered text of both channels (content and thinking) as the
pieces the chunks brought, each with its signed token count (>= 0 the server's,
< 0 an upper bound, see :mod:`.accounting`), so that a seam can hold back whole
chunks and subtract exactly their tokens. Old pieces are folded into one (their
counts summed): a seam never holds back more than ``max_overlap`` characters,
which the last ``max_overlap + 1`` pieces always cover (a piece is never empty).

This is the per-chunk path: :meth:`Delivered.add` is a few appends.
"""

from __future__ import annotations

from .accounting import Region, Regions, add_signed, all_exact, chars_of, head_counts


def _fold(pieces: list[str], counts: list[int], keep: int) -> None:
    """Join all but the last ``keep`` pieces into one, in place (their counts summed,
    a bound if any of them is one)."""
    old = counts[:-keep]
    total = sum(abs(c) for c in old)
    pieces[:-keep] = ["".join(pieces[:-keep])]
    counts[:-keep] = [-total if any(c < 0 for c in old) else total]


class Delivered:
    """The delivered pieces of both channels and the tokens each took."""

    __slots__ = ("_keep", "orphan", "text", "text_n", "think_n", "thinking")

    def __init__(self, max_overlap: int) -> None:
        self._keep = max_overlap + 1
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
        and subtracts their counts. Only once there are twice as many as that needs."""
        keep = self._keep
        if len(self.text) > 2 * keep:
            _fold(self.text, self.text_n, keep)
        if len(self.thinking) > 2 * keep:
            _fold(self.thinking, self.think_n, keep)

    def joined(self) -> tuple[str, str]:
        """(text, thinking) as one string each."""
        self.fold()
        return "".join(self.text), "".join(self.thinking)

    def add(self, text: str, thinking: str | None, n: int) -> None:
        """Keep a delivered chunk's texts; its count goes with its thinking if it has
        some (an overlap in the text then never takes it: the thinking is carried)."""
        if self.orphan:
            n = add_signed(n, self.orphan)
            self.orphan = 0
        if thinking:
            self.thinking.append(thinking)
            self.think_n.append(n)
            n = 0
        if text:
            self.text.append(text)
            self.text_n.append(n)
        elif not thinking:
            self.orphan = n

    def exact(self) -> bool:
        """Every delivered count is the server's."""
        return self.orphan >= 0 and all_exact(self.text_n) and all_exact(self.think_n)

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

    def regions(self, text_cut: int, think_cut: int, restart: bool) -> Regions:
        """The delivered pieces a seam's continuation regenerated, their counts zeroed."""
        self.fold()
        return Regions(
            Region(self.text, self.text_n, chars_of(self.text) if restart else text_cut),
            Region(self.thinking, self.think_n, chars_of(self.thinking) if restart else think_cut),
        )
