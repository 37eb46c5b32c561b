"""One pending seam: the chunks held after a resume until the overlap is regenerated.

One job: right after a seam, hold the next attempt's chunks, feed their texts to
the two :class:`~.verify.SeamCheck` (content and thinking) and, once both are
decided, drop the repeated text from the held chunks, put the tokens of the
chunks that regenerated delivered text back on the pieces they regenerated
(:class:`~.accounting.Regions`) and hand the rest over as delivered. What the
seam's outcome means for the stream's counts is the assembler's business: it
reads :class:`Released`.
"""

from __future__ import annotations

from typing import Any

from ..formats import ChunkAdapter
from .accounting import add_signed
from .delivered import Delivered
from .verify import SeamCheck

#: :meth:`PendingSeam.hold` answers: keep holding, release now, or diverged.
HOLDING, DECIDED, DIVERGED = 0, 1, 2


class Released:
    """What deciding a seam found (see :meth:`PendingSeam.release`)."""

    __slots__ = ("cut", "echoed", "final", "regenerated", "restart", "verified")

    def __init__(
        self,
        final: Any,
        *,
        cut: int,
        verified: bool,
        restart: bool,
        regenerated: bool,
        echoed: bool,
    ) -> None:
        self.final = final  # the final chunk, trimmed (None: not at the end)
        self.cut = cut  # characters dropped from the continuation
        self.verified = verified
        self.restart = restart  # the continuation regenerated everything delivered
        self.regenerated = regenerated  # ... and the server counted it again in full
        self.echoed = echoed  # ... or it echoed the text its request carried


class PendingSeam:
    """A seam whose continuation is being checked, and what to restore if it diverges."""

    __slots__ = (
        "carried_before",
        "checks",
        "fallback",
        "held",
        "held_n",
        "tokens_before",
        "tokens_prefilled",
    )

    def __init__(
        self,
        checks: tuple[SeamCheck, SeamCheck],
        tokens_before: int,
        tokens_prefilled: int,
        carried_before: int,
    ) -> None:
        self.checks = checks
        self.carried_before = carried_before  # what the request before this seam carried
        self.tokens_before = tokens_before  # the caller's token count at the break
        self.tokens_prefilled = tokens_prefilled  # tokens of the text the request carries
        self.fallback = False  # continuing from everything delivered: nothing to verify
        self.held: list[Any] = []  # the chunks held while checking
        self.held_n: list[int] = []  # the signed token count of each held chunk

    @property
    def restart(self) -> bool:
        """The continuation reproduced all the delivered text (of either channel)."""
        return self.checks[0].restart or self.checks[1].restart

    def hold(self, chunk: Any, text: str, thinking: str | None) -> int:
        """Hold a chunk and check its texts: HOLDING, DECIDED (release now) or DIVERGED."""
        content, think = self.checks
        self.held.append(chunk)
        if text:
            content.feed(text)
        if thinking:
            think.feed(thinking)
        if content.diverged or think.diverged:
            return DIVERGED
        # A channel with nothing held back waits only to see a restart coming; once
        # the other channel is decided without one, it has nothing to repeat.
        if content.resolved and not content.restart:
            think.settle()
        if think.resolved and not think.restart:
            content.settle()
        return DECIDED if content.resolved and think.resolved else HOLDING

    def end(self, text: str, thinking: str | None) -> bool:
        """The attempt ended with a final chunk carrying these texts: the overlap
        decides. False: the continuation diverged."""
        content, think = self.checks
        if text:
            content.feed(text)
        if thinking:
            think.feed(thinking)
        content.flush()
        think.flush()
        return not (content.diverged or think.diverged)

    def release(
        self, adapter: ChunkAdapter, delivered: Delivered, final: Any, out: list[Any]
    ) -> Released:
        """Drop the repeated text from the held chunks (and ``final``, if the attempt
        ended) and deliver the rest: into ``out`` and ``delivered``."""
        content, think = self.checks
        cut_text, cut_think = content.cut, think.cut
        checked = content.overlap_len + think.overlap_len > 0 or content.restart
        held = self.held
        self.held = []
        if final is not None:
            held.append(final)
        restart = self.restart
        # The tokens that regenerated delivered text replace the counts of what they
        # regenerated (the overlap, or all of it): each chunk's on the piece where its
        # text starts. Exact when the chunks fall on the old pieces' borders; otherwise
        # a later overlap inside that run subtracts too little, never too much.
        regions = delivered.regions(
            cut_text, cut_think, restart, (content.overlap_len, think.overlap_len)
        )
        straddle: tuple[list[int], int] | None = None
        last = len(held) - 1
        held_n = self.held_n
        trimmed_final: Any = None
        cut = cut_text + cut_think
        for i, chunk in enumerate(held):
            n = held_n[i] if i < len(held_n) else 0
            text, thinking = adapter.texts(chunk)
            thinking = thinking or ""
            drop_t = min(cut_text, len(text))
            drop_k = min(cut_think, len(thinking))
            cut_text -= drop_t
            cut_think -= drop_k
            text, thinking = text[drop_t:], thinking[drop_k:]
            is_final = final is not None and i == last
            if drop_t or drop_k:
                regions.assign(drop_t, drop_k, n)
                n = 0
                if not text and not thinking and not adapter.has_payload(chunk) and not is_final:
                    continue
                chunk = adapter.with_texts(chunk, text, thinking)
                if text or thinking:  # it also brought new text: where do its tokens go?
                    straddle = (delivered.think_n, len(delivered.think_n)) if thinking else None
                    straddle = straddle or (delivered.text_n, len(delivered.text_n))
            delivered.add(text, thinking or None, n)
            if is_final:
                trimmed_final = chunk
            else:
                out.append(chunk)
        if regions.lost:
            delivered.orphan = add_signed(delivered.orphan, regions.lost)
        regions.settle(straddle)
        delivered.settled()
        return Released(
            trimmed_final,
            cut=cut,
            verified=checked and not self.fallback,
            restart=restart,
            regenerated=regions.regenerated,
            echoed=regions.echoed,
        )
