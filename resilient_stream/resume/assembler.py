"""Joining the chunks of several attempts into one seamless stream (sans-I/O).

The assembler sees every chunk of every attempt and hands the caller the
chunks of one logical stream: chunks of another type are converted (chat
chunks of a resumed non-raw generate become generate chunks), the final
chunk's ``eval_count`` covers all attempts, and every seam is verified
(:mod:`.verify`): at an interruption the last characters delivered are held
back from the next request, and the chunks of the next attempt are held until
it has regenerated them byte for byte. Then the overlap is dropped from those
chunks (the caller has it) and the rest is delivered. A continuation that does
not reproduce it is never trimmed on a guess: :attr:`StreamAssembler.diverged`
turns True and the stream decides (flag and continue from everything
delivered, or raise).

It keeps the :class:`Progress` the planner needs for the next request,
including the tokens delivered text took (:mod:`.accounting`): the server's
running count where a chunk carries one, else an upper bound, kept per chunk
beside its text so that a held-back overlap's tokens are subtracted exactly
(it is regenerated, and counted once, by the next attempt). The final chunk's
count of its own attempt replaces the bounds of that attempt. Where only a
bound is known and a budget is set, a resume that could not ask for enough, or
that ended by ``length`` with the budget maybe unspent, starts over (holds
back everything) so that the server counts the whole answer itself. On the
steady-state path a chunk costs a few attribute reads and a few list appends;
holding and checking happen only right after a seam.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from ..formats import ChunkAdapter, adapter_for
from ..formats.plan import AttemptPlan, Progress
from ..result import Seam
from .accounting import (
    Bound,
    Region,
    Regions,
    add_signed,
    all_exact,
    bound_for,
    bytes_bound,
    chars_of,
    head_counts,
)
from .verify import SeamCheck, choose_overlap

ChunkT = TypeVar("ChunkT")


class _PendingSeam:
    """A seam whose continuation is being checked, and what to restore if it diverges."""

    __slots__ = (
        "carried_before",
        "checks",
        "fallback",
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
        self.held_n: list[int] = []  # the signed token count of each held chunk


class StreamAssembler(Generic[ChunkT]):
    def __init__(
        self, caller_type: type[ChunkT], *, min_overlap: int = 16, max_overlap: int = 256
    ) -> None:
        self._adapter = adapter_for(caller_type)
        self._convert: Callable[[Any], Any] | None = None
        self._text: list[str] = []
        self._thinking: list[str] = []
        # Tokens of each piece, signed: >= 0 the server's count, < 0 an upper bound.
        self._text_n: list[int] = []
        self._think_n: list[int] = []
        self._orphan = 0  # signed tokens of text-less chunks since the last piece
        self._tokens = 0  # the caller's tokens: _base + attempt_tokens
        self._base = 0  # tokens of the text the current attempt's request carried
        self._running = 0  # the server's running count in this attempt (0: none yet)
        self._bound: Bound = bytes_bound
        self._limit: int | None = None
        self._base_exact = True  # the carried text's count is the server's
        self._final_exact: bool | None = None  # set by a final chunk that says its count
        self._min_overlap = min_overlap
        self._max_overlap = max_overlap
        self._seam: _PendingSeam | None = None
        self._held: list[ChunkT] = []
        self.seams: list[Seam] = []
        self.final: ChunkT | None = None
        self.attempt_tokens = 0
        self.attempt_floor = 0
        #: The last request ended by ``length`` with the budget maybe unspent (its final
        #: chunk withheld): the next one starts over.
        self.unspent = False
        #: The continuation after the last seam did not regenerate the held-back text.
        self.diverged = False
        self._carried = -1  # characters the last resumed request carried (-1: none yet)

    # --- state -------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.final is not None

    @property
    def started(self) -> bool:
        return self._tokens > 0 or bool(self._text) or bool(self._thinking)

    @property
    def text(self) -> str:
        self._text, self._text_n = self._folded(self._text, self._text_n)
        return "".join(self._text)

    @property
    def thinking(self) -> str:
        self._thinking, self._think_n = self._folded(self._thinking, self._think_n)
        return "".join(self._thinking)

    def _folded(self, pieces: list[str], counts: list[int]) -> tuple[list[str], list[int]]:
        """Join old pieces (and their token counts) into one, keeping the last ones a
        piece per chunk: a seam holds back whole chunks (at most ``max_overlap``
        characters) and subtracts their counts."""
        keep = self._max_overlap + 1
        if len(pieces) <= 2 * keep:
            return pieces, counts
        old = counts[:-keep]
        total = sum(abs(c) for c in old)
        folded = -total if any(c < 0 for c in old) else total
        return ["".join(pieces[:-keep]), *pieces[-keep:]], [folded, *counts[-keep:]]

    @property
    def adapter(self) -> ChunkAdapter:
        return self._adapter

    @property
    def tokens(self) -> int:
        """Tokens the caller received (held chunks after a seam count once released): the
        servers' count, or an upper bound, which the caller's limit also bounds (no
        request asked for more than was left)."""
        seam = self._seam
        n = seam.tokens_before if seam is not None else self._tokens
        limit = self._limit
        return n if limit is None or n <= limit or self.tokens_exact else limit

    @property
    def tokens_exact(self) -> bool:
        """``tokens`` is the servers' count, not an upper bound."""
        if self._final_exact is not None:
            return self._final_exact
        return self._orphan >= 0 and all_exact(self._text_n) and all_exact(self._think_n)

    @property
    def verified(self) -> bool:
        """Every seam so far verified (one superseded by the next seam at the same point
        delivered nothing after it)."""
        return all(seam.verified or seam.superseded for seam in self.seams)

    def progress(self) -> Progress:
        """What the next request continues from: everything delivered, minus the
        overlap held back at a pending seam (the server must regenerate it)."""
        text, thinking = self.text, self.thinking
        seam = self._seam
        if seam is None or seam.fallback:
            return Progress(
                text=text, thinking=thinking, tokens=self._tokens, exact=self.tokens_exact
            )
        content, think = seam.checks
        t_keep, k_keep = len(text) - content.overlap_len, len(thinking) - think.overlap_len
        t_n, k_n = self._text_n, self._think_n
        exact = all_exact(head_counts(self._text, t_n, t_keep)) and all_exact(
            head_counts(self._thinking, k_n, k_keep)
        )
        return Progress(
            text=text[:t_keep],
            thinking=thinking[:k_keep],
            tokens=seam.tokens_prefilled,
            exact=exact,
        )

    # --- events ------------------------------------------------------------

    def begin_attempt(self, plan: AttemptPlan) -> None:
        self._convert = plan.convert
        self._bound = bound_for(plan.token_bound)
        self._limit = plan.token_limit
        self.attempt_tokens = 0
        #: At least this many tokens came in this attempt (a chunk holds one or more).
        self.attempt_floor = 0
        self._running = 0
        self._base = self._tokens
        self._base_exact = self.progress().exact

    def interrupt(self, *, attempt: int, reason: str, endpoint: str) -> list[ChunkT]:
        """The current attempt broke; the next one continues after a seam.

        Returns chunks that are due now (none: held chunks of an unverified
        continuation are dropped, the next attempt regenerates them)."""
        pending = self._seam
        if pending is not None:
            # Broke again before the last seam was decided: nothing after it was
            # delivered, so the next attempt continues from the same point, and the
            # next seam decides in its place.
            self._held = []
            self._tokens = pending.tokens_before
            self._carried = pending.carried_before
            self._orphan = 0
            if self.seams:
                self.seams[-1] = msgspec.structs.replace(self.seams[-1], superseded=True)
        if not self.started:
            self._seam = None
            return []
        tokens_before = self._tokens
        text, thinking = self.text, self.thinking
        overlap = self._min_overlap > 0
        # A request after a seam carries more than the one before it, so a server that
        # breaks at the same place again cannot hold the stream at one point.
        carried = carried_before = self._carried
        h_text = h_think = 0
        if overlap and text:
            keep = max(0, carried + 1 - len(thinking)) if carried >= 0 else 0
            h_text = self._choose(text, self._text, keep)
        elif overlap and thinking:
            keep = carried + 1 if carried >= 0 else 0
            h_think = self._choose(thinking, self._thinking, keep)
        if self._limit is not None and h_text + h_think < len(text) + len(thinking):
            # Nothing certain is left to ask for after the text the request would carry,
            # because its tokens are only bounded: start over (exactly counted by the
            # server), holding back everything, which the server must then regenerate.
            tail = abs(self._tokens_in_tail(h_text, h_think))
            carried_exact = all_exact(head_counts(self._text, self._text_n, len(text) - h_text))
            carried_exact = carried_exact and all_exact(
                head_counts(self._thinking, self._think_n, len(thinking) - h_think)
            )
            # ... or perhaps too little to regenerate the overlap (its bound), so that the
            # seam could not verify. (With an exact count, what is left always covers it.)
            short = self._limit - (tokens_before - tail) < max(tail, 1)
            if self.unspent or (not carried_exact and short):
                h_text, h_think = len(text), len(thinking)
        self.unspent = False
        self._carried = len(text) - h_text + len(thinking) - h_think
        overlap_tokens = abs(self._tokens_in_tail(h_text, h_think))
        # A restart is recognised on a channel without an overlap only when the other
        # channel's overlap can confirm it (see SeamCheck).
        confirmable = bool(h_text or h_think)
        self._seam = _PendingSeam(
            (
                SeamCheck(text, h_text, restarts=confirmable),
                SeamCheck(thinking, h_think, restarts=confirmable),
            ),
            tokens_before,
            max(0, tokens_before - overlap_tokens),
            carried_before,
        )
        self._tokens = self._seam.tokens_prefilled
        self._orphan = 0
        self.seams.append(
            Seam(
                offset=len(text),
                thinking_offset=len(thinking),
                tokens=tokens_before,
                attempt=attempt,
                reason=reason,
                endpoint=endpoint,
                overlap=h_text + h_think,
            )
        )
        return []

    def continue_unverified(self) -> None:
        """After a divergence: the next request carries everything delivered; the seam
        stays unverified (flagged) and only an exact restart is still recognised."""
        pending = self._seam
        assert pending is not None
        self._held = []
        self.diverged = False
        self._tokens = pending.tokens_before
        text, thinking = self.text, self.thinking
        pending.checks = (
            SeamCheck(text, 0, restarts=False),
            SeamCheck(thinking, 0, restarts=False),
        )
        pending.fallback = True
        pending.tokens_prefilled = pending.tokens_before
        pending.held_n = []
        self._carried = len(text) + len(thinking)
        self._orphan = 0
        if self.seams:
            self.seams[-1] = msgspec.structs.replace(self.seams[-1], verified=False, overlap=0)

    def diverged_continuation(self) -> str:
        """What the server sent instead of the overlap (for the divergence error)."""
        if self._seam is None:
            return ""
        content, think = self._seam.checks
        return content.held or think.held

    def accept(self, chunks: list[Any]) -> list[ChunkT]:
        """Chunks of the current attempt in, chunks for the caller out."""
        out: list[ChunkT] = []
        adapter = self._adapter
        convert = self._convert
        for raw in chunks:
            chunk: ChunkT = convert(raw) if convert is not None else raw
            if adapter.is_done(chunk):
                final = self._final_text(chunk, out)
                if final is None:
                    return out  # the seam diverged at the very end
                if self._budget_unspent(final):
                    self.unspent = True  # withheld: the stream starts over (see below)
                    return out
                out.append(self._finalize(final))
                return out
            text, thinking = adapter.texts(chunk)
            n = self._count(chunk, text, thinking)
            if self._seam is not None:
                self._seam.held_n.append(n)
                if not self._hold(chunk, out):
                    return out
                continue
            self._add_pieces(text, thinking, n)
            out.append(chunk)
        return out

    def _budget_unspent(self, final: Any) -> bool:
        """A resumed request ended by ``length`` but asked by a bound: the caller's budget
        may not be spent. Then the final chunk is withheld, the body ends without it (an
        interruption) and the next request starts over, counted by the server itself
        (``interrupt`` holds back everything), rather than ending short or over-asking.
        Only for a final chunk without text (a text-bearing one is delivered as is)."""
        if self._limit is None or self._base_exact or self._base <= 0 or self._seam is not None:
            return False
        if self._adapter.done_reason(final) != "length":
            return False
        text, thinking = self._adapter.texts(final)
        return not text and not thinking

    def _count(self, chunk: Any, text: str, thinking: str | None) -> int:
        """The chunk's tokens, signed (< 0: an upper bound), added to the counts."""
        running = self._adapter.running_tokens(chunk)
        if running >= 0:
            n = running - self._running if running > self._running else 0
            self._running = running
            signed = n
        else:
            n = self._bound(text, thinking or "")
            if self._adapter.has_payload(chunk):
                n += len(msgspec.json.encode(chunk))
            signed = -n
        self._tokens += n
        self.attempt_tokens += n
        self.attempt_floor += n if signed >= 0 else 1
        return signed

    def _add_pieces(self, text: str, thinking: str | None, n: int) -> None:
        """Keep a delivered chunk's texts; its count goes with its thinking if it has
        some (an overlap in the text then never takes it: the thinking is carried)."""
        if self._orphan:
            n = add_signed(n, self._orphan)
            self._orphan = 0
        if thinking:
            self._thinking.append(thinking)
            self._think_n.append(n)
            n = 0
        if text:
            self._text.append(text)
            self._text_n.append(n)
        elif not thinking:
            self._orphan = n

    def finish_locally(self, done_reason: str) -> list[ChunkT]:
        """The token budget ran out exactly at an interruption: end without a request."""
        pending = self._seam
        if pending is not None:  # the overlap is delivered already: its tokens count
            self._tokens = pending.tokens_before
        self._held, self._seam = [], None
        if self.seams:  # nothing follows the seam: there is nothing to regenerate
            self.seams[-1] = msgspec.structs.replace(self.seams[-1], verified=True, overlap=0)
        return [self._finalize(self._adapter.final_chunk(done_reason))]

    # --- internals ---------------------------------------------------------

    def _choose(self, delivered: str, pieces: list[str], keep: int) -> int:
        return choose_overlap(
            delivered,
            pieces,
            min_chars=self._min_overlap,
            max_chars=self._max_overlap,
            keep=keep,
        )

    def _tokens_in_tail(self, h_text: int, h_think: int) -> int:
        """Tokens of the chunks that carried the last ``h_text`` characters of text and
        the last ``h_think`` of thinking (and of text-less chunks after them): what the
        server generates again, so the request asks for that many more. Whole chunks,
        so this is exactly what the counts of the rest leave out."""
        count = self._orphan
        for pieces, counts, need in (
            (self._text, self._text_n, h_text),
            (self._thinking, self._think_n, h_think),
        ):
            i = len(pieces)
            while need > 0 and i > 0:
                i -= 1
                need -= len(pieces[i])
                count = add_signed(count, counts[i])
        return count  # signed: < 0 if any of it is a bound

    def _final_text(self, final: ChunkT, out: list[ChunkT]) -> ChunkT | None:
        """Count the text a final chunk carries (Ollama may put the last token there)
        and, right after a seam, check it like any held chunk. None: it diverged."""
        adapter = self._adapter
        text, thinking = adapter.texts(final)
        n = self._count(final, text, thinking) if text or thinking else 0
        if self._seam is not None:
            self._seam.held_n.append(n)
            return self._release(final, out)
        self._add_pieces(text, thinking, n)
        return final

    def _finalize(self, chunk: ChunkT) -> ChunkT:
        """Stamp the stream's count on the final chunk: the carried text's, plus what the
        server says this attempt generated (it regenerated the overlap: counted once)."""
        reported = self._adapter.attempt_tokens(chunk)
        if reported is not None and reported >= 0:
            self.attempt_tokens = reported
            self._tokens = self._base + reported
            self._orphan = 0
            self._final_exact = self._base_exact
        final: ChunkT = self._adapter.finalize(chunk, self.tokens)
        self.final = final
        return final

    def _hold(self, chunk: ChunkT, out: list[ChunkT]) -> bool:
        """Hold a chunk after a seam; release the held ones once the seam is decided.
        False when the continuation diverged (nothing more is accepted)."""
        assert self._seam is not None
        content, think = self._seam.checks
        text, thinking = self._adapter.texts(chunk)
        self._held.append(chunk)
        if text:
            content.feed(text)
        if thinking:
            think.feed(thinking)
        if content.diverged or think.diverged:
            return self._diverge()
        # A channel with nothing held back waits only to see a restart coming; once
        # the other channel is decided without one, it has nothing to repeat.
        if content.resolved and not content.restart:
            think.settle()
        if think.resolved and not think.restart:
            content.settle()
        if content.resolved and think.resolved:
            self._release(None, out)
        return True

    def _release(self, final: ChunkT | None, out: list[ChunkT]) -> ChunkT | None:
        """Decide the seam (at the end of the attempt for ``final``), drop the repeated
        text from the held chunks and deliver the rest. With ``final``, returns it
        trimmed (None if the seam diverged)."""
        pending = self._seam
        assert pending is not None
        content, think = pending.checks
        if final is not None:
            text, thinking = self._adapter.texts(final)
            if text:
                content.feed(text)
            if thinking:
                think.feed(thinking)
            content.flush()
            think.flush()
            if content.diverged or think.diverged:
                self._diverge()
                return None
        cut_text, cut_think = content.cut, think.cut
        if self.seams:
            checked = content.overlap_len + think.overlap_len > 0 or content.restart
            self.seams[-1] = msgspec.structs.replace(
                self.seams[-1],
                cut=cut_text + cut_think,
                verified=checked and not pending.fallback,
            )
        held, self._held, self._seam = self._held, [], None
        if final is not None:
            held.append(final)
        restart = content.restart or think.restart
        # The tokens that regenerated delivered text replace the counts of what they
        # regenerated (the overlap, or all of it): each chunk's on the piece where its
        # text starts. Exact when the chunks fall on the old pieces' borders; otherwise
        # a later overlap inside that run subtracts too little, never too much.
        regions = self._regions(content, think, restart)
        straddle: tuple[list[int], int] | None = None
        last = len(held) - 1
        adapter = self._adapter
        trimmed_final: ChunkT | None = None
        for i, chunk in enumerate(held):
            n = pending.held_n[i] if i < len(pending.held_n) else 0
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
                    straddle = (self._think_n, len(self._think_n)) if thinking else None
                    straddle = straddle or (self._text_n, len(self._text_n))
            self._add_pieces(text, thinking or None, n)
            if is_final:
                trimmed_final = chunk
            else:
                out.append(chunk)
        if regions.lost:
            self._orphan = add_signed(self._orphan, regions.lost)
        regions.settle(straddle)
        if restart and (self._base == 0 or regions.regenerated):
            # The attempt regenerated everything, counted by the server: only its own
            # count holds.
            self._tokens -= self._base
            self._base, self._base_exact = 0, True
        elif restart and not regions.echoed:
            # A restart or an echo of the text the request carried (llama-server repeats
            # a chat prefill and counts only its new tokens): the counts cannot tell. The
            # carried count stays, as an upper bound.
            self._base_exact = False
        return trimmed_final

    def _regions(self, content: SeamCheck, think: SeamCheck, restart: bool) -> Regions:
        """The delivered pieces a seam's continuation regenerated, their counts zeroed."""
        self._text, self._text_n = self._folded(self._text, self._text_n)
        self._thinking, self._think_n = self._folded(self._thinking, self._think_n)
        return Regions(
            Region(self._text, self._text_n, chars_of(self._text) if restart else content.cut),
            Region(
                self._thinking, self._think_n, chars_of(self._thinking) if restart else think.cut
            ),
        )

    def _diverge(self) -> bool:
        self.diverged = True
        return False
