"""How many tokens a chunk took, when the server does not say (sans-I/O).

Servers count tokens only here and there: llama-server's ``timings.predicted_n``
on every chunk (``timings_per_token``), vLLM's ``usage`` on every chunk
(``stream_options.continuous_usage_stats``), our reference server's running
counts, and otherwise only at the end (Ollama's ``eval_count``, OpenAI's
``usage``). Between those, a chunk's tokens are unknown, and one chunk may hold
several tokens (llama.cpp holds back the tokens of an incomplete UTF-8
character; a stop-sequence prefix or a reasoning parser can hold back any
text). Counting one token per chunk then undercounts, and a resumed request
asks for more than is left.

So an uncounted chunk is counted by an **upper bound**, never by a guess:

* ``"bytes"``: its UTF-8 bytes. A byte-level tokenizer's token is at least one
  byte of text, so no server can have generated more tokens than that for it,
  however it groups tokens into chunks. (Tokens the server generates but never
  delivers, such as reasoning markers its parser strips, are not in any text;
  the bound has no way to see them.)
* ``"utf8"``: one token, plus one per continuation byte of its characters
  (``1 + bytes - characters``): for servers that put several tokens in one
  chunk only to complete a UTF-8 character (llama-cpp-python 0.3.36's stream:
  each chunk is the shortest run of tokens that decodes).

Chunks with a payload besides text (tool calls) count its JSON bytes as well.

The assembler keeps a signed count per delivered piece (>= 0: the server's,
< 0: an upper bound) so that a held-back overlap subtracts exactly the counts
of its chunks; after a seam, :class:`Regions` puts the counts of the chunks that
regenerated delivered text back on its pieces.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

#: (text, thinking) -> an upper bound of the tokens a chunk carrying them took.
Bound = Callable[[str, str], int]


def _utf8_len(s: str) -> int:
    """UTF-8 bytes of ``s`` without encoding it when it is ASCII (most chunks): this runs
    once per chunk that the server does not count."""
    return len(s) if s.isascii() else len(s.encode())


def bytes_bound(text: str, thinking: str) -> int:
    return max(1, _utf8_len(text) + (_utf8_len(thinking) if thinking else 0))


def utf8_bound(text: str, thinking: str) -> int:
    n = _utf8_len(text) - len(text) + (_utf8_len(thinking) - len(thinking) if thinking else 0)
    return 1 + n


BOUNDS: dict[str, Bound] = {"bytes": bytes_bound, "utf8": utf8_bound}


def bound_for(name: str) -> Bound:
    try:
        return BOUNDS[name]
    except KeyError:
        raise ValueError(f"unknown token bound {name!r}; known: {sorted(BOUNDS)}") from None


# --- signed per-piece counts -----------------------------------------------------


def all_exact(counts: list[int]) -> bool:
    return all(c >= 0 for c in counts)


def head_counts(pieces: list[str], counts: list[int], chars: int) -> list[int]:
    """The counts of the pieces that make up the first ``chars`` characters."""
    total, i = sum(map(len, pieces)), len(pieces)
    while i > 0 and total > chars:
        i -= 1
        total -= len(pieces[i])
    return counts[:i]


def add_signed(a: int, b: int) -> int:
    """The sum of two signed counts (< 0: an upper bound, if either is one)."""
    n = abs(a) + abs(b)
    return -n if a < 0 or b < 0 else n


def chars_of(pieces: list[str]) -> int:
    return sum(map(len, pieces))


def tail_start(pieces: list[str], chars: int) -> tuple[int, int]:
    """The first of the last pieces that cover ``chars`` characters, and how far before
    the region it begins (<= 0)."""
    i, need = len(pieces), chars
    while need > 0 and i > 0:
        i -= 1
        need -= len(pieces[i])
    return i, need


class Region:
    """The last ``chars`` characters of one channel's pieces, regenerated after a seam."""

    __slots__ = (
        "aligned",
        "chars",
        "counts",
        "echoed",
        "end",
        "first",
        "held",
        "old",
        "pos",
        "regenerated",
        "restart",
        "starts",
        "total",
    )

    def __init__(self, pieces: list[str], counts: list[int], chars: int, held: int = -1) -> None:
        """``held``: the characters the request held back (the overlap), when the region
        is more than that (a restart); -1: the region is the overlap."""
        self.counts, self.chars = counts, chars
        self.restart = held >= 0  # the region is all of the delivered text
        i, need = tail_start(pieces, chars)
        self.first, self.end = i, len(counts)
        self.old = counts[i:]  # the counts of the first time it was delivered
        #: The first counts of the held-back pieces (what a server that echoes the
        #: carried text counts again when it regenerates them): the region's, unless
        #: the region is more than the overlap.
        self.held = sum(counts[tail_start(pieces, held)[0] :]) if held >= 0 else sum(self.old)
        for j in range(i, len(counts)):
            counts[j] = 0
        self.starts: list[int] = []  # where each piece of the region starts in it
        offset = need  # <= 0: the first piece may begin before the region
        for piece in pieces[i:]:
            self.starts.append(offset)
            offset += len(piece)
        self.pos = 0
        self.total = 0  # signed: the counts assigned to the region
        self.aligned = need == 0  # every regenerating chunk ended on an old border
        self.echoed = False  # settled: the server echoed the region (see settle)
        self.regenerated = False  # settled: the server counted the region again

    def assign(self, chars: int, n: int) -> bool:
        """A chunk regenerated the next ``chars`` of the region: its count goes to the
        piece where that text starts. False: the region has no pieces."""
        if not self.starts:
            return False
        self.total = add_signed(self.total, n)
        at = bisect.bisect_right(self.starts, self.pos) - 1
        self.pos += chars
        inside = bisect.bisect_left(self.starts, self.pos) - at - 1  # borders it covers
        if inside > 0 or (self.pos != self.chars and self.pos not in self.starts):
            self.aligned = False  # one chunk for several old pieces, or ends inside one
        i = self.first + max(at, 0)
        self.counts[i] = add_signed(self.counts[i], n)
        return True

    def settle(self, straddle: tuple[list[int], int] | None) -> None:
        """Chunks that did not fall on the old borders (or that also brought new text:
        ``straddle``) leave the per-piece split unknown: keep the old counts when they
        and the new total are the servers' and agree (the rest goes to the new piece),
        else the new total, marked a bound, on the first piece."""
        old_total = sum(self.old)
        exact = all(c >= 0 for c in self.old) and self.total >= 0
        extra = self.total - old_total
        # Counted again in full, by the server's own counts, with nothing else mixed in.
        self.regenerated = exact and extra >= 0 and straddle is None
        if exact and (extra < 0 or (extra == 0 and straddle is not None)):
            # Fewer tokens than when this text was first delivered (or as many, with new
            # text after it, which has at least one token): the server echoed text its
            # request carried instead of generating it again (llama-server repeats a
            # chat prefill in its first delta and counts only the new tokens). The
            # first counts stand; the new ones go with the new text.
            self.counts[self.first : self.end] = self.old
            if straddle is not None and self.total:
                # The echo is the carried text only: the server generated the held-back
                # overlap again and counted it, so the new text has the rest.
                new = self.total - self.held
                counts, at = straddle
                counts[at] = add_signed(counts[at], new if new >= 0 else self.total)
            self.echoed = True
            return
        if self.aligned and straddle is None:
            return
        if exact and (extra == 0 or (extra > 0 and straddle is not None)):
            self.counts[self.first : self.end] = self.old
            if straddle is not None and extra:
                counts, at = straddle
                counts[at] = add_signed(counts[at], extra)
            return
        for j in range(self.first, self.end):
            self.counts[j] = 0
        bound = abs(self.total)
        if self.restart:
            # A restart, or an echo of the carried text followed by the regenerated
            # overlap: the counts cannot tell. The text took at most the new bound (a
            # restart) or its first counts (an echo: the carried text as counted then,
            # the overlap regenerated as the same tokens); so at most the larger.
            bound = max(bound, sum(map(abs, self.old)))
        self.counts[self.first] = -bound or -1


class Regions:
    __slots__ = ("lost", "text", "thinking")

    def __init__(self, text: Region, thinking: Region) -> None:
        self.text, self.thinking = text, thinking
        self.lost = 0  # counts that found no piece (kept as text-less tokens)

    def assign(self, drop_text: int, drop_think: int, n: int) -> None:
        if drop_think:
            placed = self.thinking.assign(drop_think, n)
            if drop_text:
                self.text.pos += drop_text
        else:
            placed = self.text.assign(drop_text, n)
        if not placed:
            self.lost = add_signed(self.lost, n)

    def settle(self, straddle: tuple[list[int], int] | None) -> None:
        self.text.settle(straddle if self.text.total and not self.thinking.total else None)
        self.thinking.settle(straddle if self.thinking.total else None)

    @property
    def echoed(self) -> bool:
        return self.text.echoed or self.thinking.echoed

    @property
    def regenerated(self) -> bool:
        return self.text.regenerated and self.thinking.regenerated
