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

It keeps the :class:`Progress` the planner needs for the next request. On the
steady-state path a chunk costs a few attribute reads and two list appends;
holding and checking happen only right after a seam.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from ..formats import ChunkAdapter, adapter_for
from ..formats.plan import AttemptPlan, Progress
from ..result import Seam
from .verify import SeamCheck, choose_overlap

ChunkT = TypeVar("ChunkT")


class _PendingSeam:
    """A seam whose continuation is being checked, and what to restore if it diverges."""

    __slots__ = ("carried_before", "checks", "fallback", "tokens_before", "tokens_prefilled")

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


class StreamAssembler(Generic[ChunkT]):
    def __init__(
        self, caller_type: type[ChunkT], *, min_overlap: int = 16, max_overlap: int = 256
    ) -> None:
        self._adapter = adapter_for(caller_type)
        self._convert: Callable[[Any], Any] | None = None
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._tokens = 0
        self._min_overlap = min_overlap
        self._max_overlap = max_overlap
        self._seam: _PendingSeam | None = None
        self._held: list[ChunkT] = []
        self.seams: list[Seam] = []
        self.final: ChunkT | None = None
        self.attempt_tokens = 0
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
        self._text = self._folded(self._text)
        return "".join(self._text)

    @property
    def thinking(self) -> str:
        self._thinking = self._folded(self._thinking)
        return "".join(self._thinking)

    def _folded(self, pieces: list[str]) -> list[str]:
        """Join old pieces into one, keeping the last ones a piece per chunk: a seam
        counts the chunks of its overlap (at most ``max_overlap`` characters)."""
        keep = self._max_overlap + 1
        if len(pieces) <= 2 * keep:
            return pieces
        return ["".join(pieces[:-keep]), *pieces[-keep:]]

    @property
    def adapter(self) -> ChunkAdapter:
        return self._adapter

    @property
    def tokens(self) -> int:
        """Tokens the caller received (held chunks after a seam count once released)."""
        seam = self._seam
        return seam.tokens_before if seam is not None else self._tokens

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
            return Progress(text=text, thinking=thinking, tokens=self._tokens)
        content, think = seam.checks
        return Progress(
            text=text[: len(text) - content.overlap_len],
            thinking=thinking[: len(thinking) - think.overlap_len],
            tokens=seam.tokens_prefilled,
        )

    # --- events ------------------------------------------------------------

    def begin_attempt(self, plan: AttemptPlan) -> None:
        self._convert = plan.convert
        self.attempt_tokens = 0

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
        self._carried = len(text) - h_text + len(thinking) - h_think
        overlap_tokens = self._tokens_in_tail(h_text, h_think)
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
        self._carried = len(text) + len(thinking)
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
                out.append(self._finalize(final))
                return out
            self._tokens += 1
            self.attempt_tokens += 1
            if self._seam is not None:
                if not self._hold(chunk, out):
                    return out
                continue
            text, thinking = adapter.texts(chunk)
            if text:
                self._text.append(text)
            if thinking:
                self._thinking.append(thinking)
            out.append(chunk)
        return out

    def finish_locally(self, done_reason: str) -> list[ChunkT]:
        """The token budget ran out exactly at an interruption: end without a request."""
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
        """Chunks that carried the last ``h`` characters (of text, or of thinking): what
        the server generates again, so the request asks for that many more."""
        pieces = self._text if h_text else self._thinking
        need = h_text or h_think
        count = 0
        for piece in reversed(pieces):
            if need <= 0:
                break
            need -= len(piece)
            count += 1
        return count + (1 if need > 0 else 0)

    def _final_text(self, final: ChunkT, out: list[ChunkT]) -> ChunkT | None:
        """Count the text a final chunk carries (Ollama may put the last token there)
        and, right after a seam, check it like any held chunk. None: it diverged."""
        adapter = self._adapter
        text, thinking = adapter.texts(final)
        if text or thinking:
            self._tokens += 1
            self.attempt_tokens += 1
        if self._seam is not None:
            return self._release(final, out)
        if text:
            self._text.append(text)
        if thinking:
            self._thinking.append(thinking)
        return final

    def _finalize(self, chunk: ChunkT) -> ChunkT:
        final: ChunkT = self._adapter.finalize(chunk, self._tokens)
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
        last = len(held) - 1
        adapter = self._adapter
        trimmed_final: ChunkT | None = None
        for i, chunk in enumerate(held):
            text, thinking = adapter.texts(chunk)
            thinking = thinking or ""
            drop_t = min(cut_text, len(text))
            drop_k = min(cut_think, len(thinking))
            cut_text -= drop_t
            cut_think -= drop_k
            text, thinking = text[drop_t:], thinking[drop_k:]
            is_final = final is not None and i == last
            if drop_t or drop_k:
                if not text and not thinking and not adapter.has_payload(chunk) and not is_final:
                    continue
                chunk = adapter.with_texts(chunk, text, thinking)
            if text:
                self._text.append(text)
            if thinking:
                self._thinking.append(thinking)
            if is_final:
                trimmed_final = chunk
            else:
                out.append(chunk)
        return trimmed_final

    def _diverge(self) -> bool:
        self.diverged = True
        return False
