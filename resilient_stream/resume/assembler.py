"""Joining the chunks of several attempts into one seamless stream (sans-I/O).

The assembler sees every chunk of every attempt and hands the caller the
chunks of one logical stream: chunks of another type are converted (chat
chunks of a resumed non-raw generate become generate chunks), the final
chunk's ``eval_count`` covers all attempts, and every seam is verified
(:mod:`.verify`): at an interruption the last characters delivered are held
back from the next request, and the chunks of the next attempt are held until
it has regenerated them byte for byte (:mod:`.seam`). Then the overlap is
dropped from those chunks (the caller has it) and the rest is delivered. A
continuation that does not reproduce it is never trimmed on a guess:
:attr:`StreamAssembler.diverged` turns True and the stream decides (flag and
continue from everything delivered, or raise).

It keeps the :class:`Progress` the planner needs for the next request,
including the tokens delivered text took (:mod:`.accounting`): the server's
running count where a chunk carries one, else an upper bound, kept per chunk
beside its text (:mod:`.delivered`) so that a held-back overlap's tokens are
subtracted exactly (it is regenerated, and counted once, by the next attempt).
The final chunk's count of its own attempt replaces the bounds of that attempt.
Where only a bound is known and a budget is set, a resume that could not ask
for enough, or that ended by ``length`` with the budget maybe unspent, starts
over (holds back everything) so that the server counts the whole answer itself.

This module decides what happens at a seam and at the end; the steady-state
path (:meth:`StreamAssembler.accept` without a pending seam) is one loop with
the adapter's methods bound once per call: a chunk costs a few attribute reads
and a few list appends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import msgspec

from ..formats import ChunkAdapter, adapter_for
from ..formats.plan import AttemptPlan, Progress
from ..result import Seam
from .accounting import Bound, bound_for, bytes_bound
from .delivered import Delivered
from .seam import DECIDED, DIVERGED, PendingSeam
from .verify import SeamCheck, choose_overlap

ChunkT = TypeVar("ChunkT")


class StreamAssembler(Generic[ChunkT]):
    # One per open stream, so no __dict__.
    __slots__ = (
        "__weakref__",
        "_adapter",
        "_base",
        "_base_exact",
        "_bound",
        "_carried",
        "_convert",
        "_delivered",
        "_final_exact",
        "_limit",
        "_max_overlap",
        "_min_overlap",
        "_raise_restarts",
        "_running",
        "_seam",
        "_tokens",
        "attempt_floor",
        "attempt_tokens",
        "diverged",
        "final",
        "seams",
        "unspent",
    )

    def __init__(
        self,
        caller_type: type[ChunkT],
        *,
        min_overlap: int = 16,
        max_overlap: int = 256,
        raise_restarts: bool = False,
    ) -> None:
        """``raise_restarts``: an answer started again after carried text is a divergence
        (``on_divergence="raise"``), not a flagged seam (see :meth:`_release`)."""
        self._adapter = adapter_for(caller_type)
        self._raise_restarts = raise_restarts
        self._convert: Callable[[Any], Any] | None = None
        # A seam holds back at most this many characters, of whole chunks (see verify).
        self._delivered = Delivered(max(min_overlap, max_overlap) + 1)
        self._tokens = 0  # the caller's tokens: _base + attempt_tokens
        self._base = 0  # tokens of the text the current attempt's request carried
        self._running = 0  # the server's running count in this attempt (0: none yet)
        self._bound: Bound = bytes_bound
        self._limit: int | None = None
        self._base_exact = True  # the carried text's count is the server's
        self._final_exact: bool | None = None  # set by a final chunk that says its count
        self._min_overlap = min_overlap
        self._max_overlap = max_overlap
        self._seam: PendingSeam | None = None
        # made at the first seam (most streams never have one: an object less for the
        # garbage collector; a tuple, so an append without it fails loudly)
        self.seams: list[Seam] = cast("list[Seam]", ())
        self.final: ChunkT | None = None
        self.attempt_tokens = 0
        #: At least this many tokens came in this attempt (a chunk holds one or more).
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
        return self._tokens > 0 or self._delivered.started

    @property
    def text(self) -> str:
        return self._delivered.joined()[0]

    @property
    def thinking(self) -> str:
        return self._delivered.joined()[1]

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
        return self._delivered.exact()

    @property
    def verified(self) -> bool:
        """Every seam so far verified (one superseded by the next seam at the same point
        delivered nothing after it)."""
        return all(seam.verified or seam.superseded for seam in self.seams)

    def progress(self) -> Progress:
        """What the next request continues from: everything delivered, minus the
        overlap held back at a pending seam (the server must regenerate it)."""
        text, thinking = self._delivered.joined()
        seam = self._seam
        if seam is None or seam.fallback:
            return Progress(
                text=text, thinking=thinking, tokens=self._tokens, exact=self.tokens_exact
            )
        content, think = seam.checks
        t_keep, k_keep = len(text) - content.overlap_len, len(thinking) - think.overlap_len
        return Progress(
            text=text[:t_keep],
            thinking=thinking[:k_keep],
            tokens=seam.tokens_prefilled,
            exact=self._delivered.head_exact(t_keep, k_keep),
        )

    # --- events ------------------------------------------------------------

    def begin_attempt(self, plan: AttemptPlan) -> None:
        self._convert = plan.convert
        self._bound = bound_for(plan.token_bound)
        self._limit = plan.token_limit
        self.attempt_tokens = 0
        self.attempt_floor = 0
        self._running = 0
        self._base = self._tokens
        self._base_exact = self.progress().exact

    def interrupt(self, *, attempt: int, reason: str, endpoint: str) -> list[ChunkT]:
        """The current attempt broke; the next one continues after a seam.

        Returns chunks that are due now (none: held chunks of an unverified
        continuation are dropped, the next attempt regenerates them)."""
        delivered = self._delivered
        pending = self._seam
        if pending is not None:
            # Broke again before the last seam was decided: nothing after it was
            # delivered, so the next attempt continues from the same point, and the
            # next seam decides in its place.
            pending.held = []
            self._tokens = pending.tokens_before
            self._carried = pending.carried_before
            delivered.orphan = 0
            if self.seams:
                self.seams[-1] = msgspec.structs.replace(self.seams[-1], superseded=True)
        if not self.started:
            self._seam = None
            return []
        tokens_before = self._tokens
        if not self.tokens_exact:
            # After a seam that the counts could not tell apart from an echo, the stream's
            # count keeps the carried text's bound besides the continuation's (the final
            # chunk needs both); what the delivered text took is the pieces' bound,
            # which may be less (else a request asks 1 token with 55 left and cannot
            # regenerate its overlap).
            tokens_before = min(tokens_before, delivered.bound())
        text, thinking = delivered.joined()
        overlap = self._min_overlap > 0
        # A request after a seam carries more than the one before it where it can, so a
        # server that breaks at the same place again cannot hold the stream at one point.
        carried_before = self._carried
        h_text = h_think = 0
        if overlap:
            h_text, h_think = self._hold_back(text, thinking, carried_before + 1)
            if not h_text and not h_think and carried_before >= 0:
                # Carrying more would hold back nothing, and a seam without an overlap
                # cannot tell new text from an echo of the carried text (llama-server
                # repeats a chat prefill): carry what the last request carried instead.
                # The stream still ends: every request counts against the attempts.
                h_text, h_think = self._hold_back(text, thinking, carried_before)
        if self._limit is not None and h_text + h_think < len(text) + len(thinking):
            # Nothing certain is left to ask for after the text the request would carry,
            # because its tokens are only bounded: start over (exactly counted by the
            # server), holding back everything, which the server must then regenerate.
            signed_tail = delivered.tail_tokens(h_text, h_think)
            tail = abs(signed_tail)
            carried_exact = delivered.head_exact(len(text) - h_text, len(thinking) - h_think)
            # ... or perhaps too little to regenerate the overlap (its bound), so that the
            # seam could not verify. (With an exact count, what is left always covers it.)
            need = tail
            if signed_tail <= 0:
                # Not the server's count (or none: a seam that could not split its
                # count put it all on the region's first piece): the overlap's own bound.
                need = max(
                    tail,
                    self._bound(text[len(text) - h_text :], thinking[len(thinking) - h_think :]),
                )
            short = self._limit - (tokens_before - tail) < need
            if self.unspent or (not carried_exact and short):
                h_text, h_think = len(text), len(thinking)
        self.unspent = False
        self._carried = len(text) - h_text + len(thinking) - h_think
        overlap_tokens = abs(delivered.tail_tokens(h_text, h_think))
        if self._carried == 0:
            # The request carries nothing: it is a start over, whatever the counts of the
            # delivered pieces add up to (a carried bound kept after an echo, below).
            overlap_tokens = tokens_before
        # A restart is recognised on a channel without an overlap only when the other
        # channel's overlap can confirm it (see SeamCheck).
        confirmable = bool(h_text or h_think)
        self._seam = PendingSeam(
            (
                SeamCheck(text, h_text, restarts=confirmable),
                SeamCheck(thinking, h_think, restarts=confirmable),
            ),
            tokens_before,
            max(0, tokens_before - overlap_tokens),
            carried_before,
        )
        self._tokens = self._seam.tokens_prefilled
        delivered.orphan = 0
        if not self.seams:
            self.seams = []
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
        pending.held = []
        self.diverged = False
        self._tokens = pending.tokens_before
        text, thinking = self._delivered.joined()
        pending.checks = (
            SeamCheck(text, 0, restarts=False),
            SeamCheck(thinking, 0, restarts=False),
        )
        pending.fallback = True
        pending.tokens_prefilled = pending.tokens_before
        pending.held_n = []
        self._carried = len(text) + len(thinking)
        self._delivered.orphan = 0
        if self.seams:
            self.seams[-1] = msgspec.structs.replace(self.seams[-1], verified=False, overlap=0)

    def diverged_continuation(self) -> str:
        """What the server sent instead of the overlap (for the divergence error)."""
        if self._seam is None:
            return ""
        content, think = self._seam.checks
        return content.held or think.held

    def accept(self, chunks: list[Any]) -> list[ChunkT]:
        """Chunks of the current attempt in, chunks for the caller out.

        The steady state (no seam pending) stays in this loop, without a call of its
        own: a chunk's count is the server's running count where it carries one (one
        subtraction), else its bound. (Binding the adapter's methods to locals costs
        more than it saves: a read brings about one chunk.)"""
        out: list[ChunkT] = []
        adapter = self._adapter
        convert = self._convert
        delivered = self._delivered
        for raw in chunks:
            chunk: ChunkT = convert(raw) if convert is not None else raw
            done, text, thinking, running, payload = adapter.facts(chunk)
            if done:
                self._end(chunk, out)
                return out
            # _tally's steps, inline (its call would cost 0.6k instructions a chunk), with
            # bytes_bound's answer taken without its calls for Ollama's every chunk
            if running >= 0:
                last = self._running
                n = running - last if running > last else 0
                self._running = running
                floor = signed = n
            else:
                if self._bound is bytes_bound and not thinking and not payload and text.isascii():
                    n = len(text) or 1
                else:
                    n = self._bound_of(chunk if payload else None, text, thinking)
                floor, signed = 1, -n
            self._tokens += n
            self.attempt_tokens += n
            self.attempt_floor += floor
            seam = self._seam
            if seam is not None:
                seam.held_n.append(signed)
                if not self._hold(seam, chunk, text, thinking, out):
                    return out
                continue
            delivered.add(text, thinking, signed)
            out.append(chunk)
        return out

    def finish_locally(self, done_reason: str) -> list[ChunkT]:
        """The token budget ran out exactly at an interruption: end without a request."""
        pending = self._seam
        if pending is not None:  # the overlap is delivered already: its tokens count
            self._tokens = pending.tokens_before
        self._seam = None
        if self.seams:  # nothing follows the seam: there is nothing to regenerate
            self.seams[-1] = msgspec.structs.replace(self.seams[-1], verified=True, overlap=0)
        return [self._finalize(self._adapter.final_chunk(done_reason))]

    # --- internals ---------------------------------------------------------

    def _count(self, chunk: Any, text: str, thinking: str | None) -> int:
        """The chunk's tokens, signed (< 0: an upper bound), added to the counts."""
        adapter = self._adapter
        payload = chunk if adapter.has_payload(chunk) else None
        return self._tally(adapter.running_tokens(chunk), payload, text, thinking)

    def _tally(self, running: int, payload: Any, text: str, thinking: str | None) -> int:
        """A chunk's tokens, signed (< 0: an upper bound), added to the counts: the
        server's running count where the chunk carries one (``running`` >= 0), else its
        bound (``payload``: the chunk, if it carries more than text: its JSON counts)."""
        if running >= 0:
            last = self._running
            n = running - last if running > last else 0
            self._running = running
            floor = signed = n
        else:
            n = self._bound_of(payload, text, thinking)
            floor, signed = 1, -n
        self._tokens += n
        self.attempt_tokens += n
        self.attempt_floor += floor
        return signed

    def _bound_of(self, payload: Any, text: str, thinking: str | None) -> int:
        """The upper bound of an uncounted chunk's tokens (``payload``: the chunk, if it
        carries more than text: its JSON counts too)."""
        n = self._bound(text, thinking or "")
        if payload is not None:
            n += len(msgspec.json.encode(payload))
        return n

    def _undo_point(self, out: list[ChunkT]) -> tuple[Any, ...]:
        """What :meth:`_restore` needs to take a seam's release back (a restart only)."""
        d = self._delivered
        return (len(out), d.text[:], d.text_n[:], d.thinking[:], d.think_n[:], d.orphan)

    def _restore(self, undo: tuple[Any, ...], out: list[ChunkT]) -> None:
        d = self._delivered
        n, d.text, d.text_n, d.thinking, d.think_n, d.orphan = undo
        del out[n:]
        d.settled()

    def _end(self, chunk: ChunkT, out: list[ChunkT]) -> None:
        """The attempt's final chunk: deliver it with the stream's count (unless the
        seam diverged at the very end, or the budget may be unspent)."""
        final = self._final_text(chunk, out)
        if final is None:
            return  # the seam diverged at the very end
        if self._budget_unspent(final):
            self.unspent = True  # withheld: the stream starts over (see below)
            return
        out.append(self._finalize(final))

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

    def _hold_back(self, text: str, thinking: str, keep: int) -> tuple[int, int]:
        """Characters of (text, thinking) to hold back, leaving at least ``keep``
        characters in the request (``keep`` <= 0: no floor)."""
        keep = max(0, keep)
        if text:
            return self._choose(text, self._delivered.text, max(0, keep - len(thinking))), 0
        if thinking:
            return 0, self._choose(thinking, self._delivered.thinking, keep)
        return 0, 0

    def _choose(self, delivered: str, pieces: list[str], keep: int) -> int:
        return choose_overlap(
            delivered,
            pieces,
            min_chars=self._min_overlap,
            max_chars=self._max_overlap,
            keep=keep,
        )

    def _final_text(self, final: ChunkT, out: list[ChunkT]) -> ChunkT | None:
        """Count the text a final chunk carries (Ollama may put the last token there)
        and, right after a seam, check it like any held chunk. None: it diverged."""
        text, thinking = self._adapter.texts(final)
        n = self._count(final, text, thinking) if text or thinking else 0
        seam = self._seam
        if seam is not None:
            seam.held_n.append(n)
            if not seam.end(text, thinking):
                self.diverged = True
                return None
            trimmed: ChunkT | None = self._release(seam, final, out)
            return trimmed
        self._delivered.add(text, thinking, n)
        return final

    def _finalize(self, chunk: ChunkT) -> ChunkT:
        """Stamp the stream's count on the final chunk: the carried text's, plus what the
        server says this attempt generated (it regenerated the overlap: counted once)."""
        reported = self._adapter.attempt_tokens(chunk)
        if reported is not None and reported >= 0:
            self.attempt_tokens = reported
            self._tokens = self._base + reported
            self._delivered.orphan = 0
            self._final_exact = self._base_exact
        final: ChunkT = self._adapter.finalize(chunk, self.tokens)
        self.final = final
        return final

    def _hold(
        self, seam: PendingSeam, chunk: ChunkT, text: str, thinking: str | None, out: list[ChunkT]
    ) -> bool:
        """Hold a chunk after a seam; release the held ones once the seam is decided.
        False when the continuation diverged (nothing more is accepted)."""
        state = seam.hold(chunk, text, thinking)
        if state == DIVERGED:
            self.diverged = True
            return False
        if state == DECIDED:
            self._release(seam, None, out)
            return not self.diverged
        return True

    def _release(self, seam: PendingSeam, final: Any, out: list[ChunkT]) -> Any:
        """Decide the seam: deliver the held chunks, trimmed, and settle what the
        continuation's counts say about the text the request carried.

        A continuation that reproduced all the delivered text after a request that
        carried some (a prefill, a prompt + partial) either echoed the carried text and
        went on (llama-server: the same context) or started the answer again, because
        the server closed the carried turn (llama-cpp-python's chat template): a new
        answer in another context, which may leave the unbroken one anywhere after the
        repeated text. Only the server's counts tell the two apart (an echo is not
        counted): without them the seam is flagged, with ``raise_restarts`` it diverges.
        (Found on the real-model tier: a restart that repeated the 31 delivered
        characters, then went on otherwise, read as verified.)"""
        self._seam = None
        undo = self._undo_point(out) if seam.restart and self._raise_restarts else None
        released = seam.release(self._adapter, self._delivered, final, out)
        verified = released.verified
        if released.restart and self._carried > 0 and not released.echoed:
            verified = False
            if undo is not None:  # nothing of the other answer is delivered
                self._restore(undo, out)
                self._tokens = seam.tokens_before
                self.diverged = True
                return None
        if self.seams:
            self.seams[-1] = msgspec.structs.replace(
                self.seams[-1], cut=released.cut, verified=verified
            )
        if released.restart and (self._base == 0 or released.regenerated):
            # The attempt regenerated everything, counted by the server: only its own
            # count holds.
            self._tokens -= self._base
            self._base, self._base_exact = 0, True
        elif released.restart and not released.echoed:
            # A restart or an echo of the text the request carried (llama-server repeats
            # a chat prefill and counts only its new tokens): the counts cannot tell. The
            # carried count stays, as an upper bound.
            self._base_exact = False
        return released.final
