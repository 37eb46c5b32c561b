"""Joining the chunks of several attempts into one seamless stream (sans-I/O).

The assembler sees every chunk of every attempt and hands the caller the
chunks of one logical stream: chunks of another type are converted (chat
chunks of a resumed non-raw generate become generate chunks), text a server
repeats after a seam is cut (:class:`SeamStitcher`), and the final chunk's ``eval_count`` covers all
attempts. It keeps the :class:`Progress` the planner needs for the next
resume. On the steady-state path a chunk costs a few attribute reads and two
list appends; holding and trimming happen only right after a seam.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from ..formats import ChunkAdapter, adapter_for
from ..formats.plan import AttemptPlan, Progress
from ..result import Seam
from .seam import SeamStitcher

ChunkT = TypeVar("ChunkT")


class StreamAssembler(Generic[ChunkT]):
    def __init__(
        self, caller_type: type[ChunkT], *, min_overlap: int = 16, max_overlap: int = 4096
    ) -> None:
        self._adapter = adapter_for(caller_type)
        self._convert: Callable[[Any], Any] | None = None
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._tokens = 0
        self._min_overlap = min_overlap
        self._max_overlap = max_overlap
        # Seam state: stitchers for content and thinking, and the chunks held meanwhile.
        self._stitch: tuple[SeamStitcher, SeamStitcher] | None = None
        self._held: list[ChunkT] = []
        self.seams: list[Seam] = []
        self.final: ChunkT | None = None
        self.attempt_tokens = 0

    # --- state -------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.final is not None

    @property
    def started(self) -> bool:
        return self._tokens > 0 or bool(self._text) or bool(self._thinking)

    @property
    def text(self) -> str:
        if len(self._text) > 1:
            self._text = ["".join(self._text)]
        return self._text[0] if self._text else ""

    @property
    def thinking(self) -> str:
        if len(self._thinking) > 1:
            self._thinking = ["".join(self._thinking)]
        return self._thinking[0] if self._thinking else ""

    @property
    def adapter(self) -> ChunkAdapter:
        return self._adapter

    @property
    def tokens(self) -> int:
        return self._tokens

    def progress(self) -> Progress:
        return Progress(text=self.text, thinking=self.thinking, tokens=self._tokens)

    # --- events ------------------------------------------------------------

    def begin_attempt(self, plan: AttemptPlan) -> None:
        self._convert = plan.convert
        self.attempt_tokens = 0

    def interrupt(self, *, attempt: int, reason: str, endpoint: str) -> list[ChunkT]:
        """The current attempt broke; the next one continues after a seam.

        Returns chunks that were held at an earlier seam and are now due.
        """
        released: list[ChunkT] = []
        self._release_held(force=True, into=released)
        if not self.started:
            return released
        self.seams.append(
            Seam(
                offset=len(self.text),
                thinking_offset=len(self.thinking),
                tokens=self._tokens,
                attempt=attempt,
                reason=reason,
                endpoint=endpoint,
            )
        )
        self._stitch = (
            SeamStitcher(self.text, min_overlap=self._min_overlap, max_overlap=self._max_overlap),
            SeamStitcher(
                self.thinking, min_overlap=self._min_overlap, max_overlap=self._max_overlap
            ),
        )
        if self._stitch[0].resolved and self._stitch[1].resolved:
            self._stitch = None
        return released

    def accept(self, chunks: list[Any]) -> list[ChunkT]:
        """Chunks of the current attempt in, chunks for the caller out."""
        out: list[ChunkT] = []
        adapter = self._adapter
        convert = self._convert
        for raw in chunks:
            chunk: ChunkT = convert(raw) if convert is not None else raw
            if adapter.is_done(chunk):
                out.append(self._finalize(self._last_text(chunk, out)))
                return out
            self._tokens += 1
            self.attempt_tokens += 1
            if self._stitch is not None:
                self._hold(chunk, out)
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
        out: list[ChunkT] = []
        self._release_held(force=True, into=out)
        out.append(self._finalize(self._adapter.final_chunk(done_reason)))
        return out

    # --- internals ---------------------------------------------------------

    def _last_text(self, final: ChunkT, out: list[ChunkT]) -> ChunkT:
        """Count the text a final chunk carries (Ollama may put the last token there)
        and, right after a seam, trim its share of the overlap like any held chunk."""
        adapter = self._adapter
        text, thinking = adapter.texts(final)
        if not text and not thinking:
            self._release_held(force=True, into=out)
            return final
        self._tokens += 1
        self.attempt_tokens += 1
        if self._stitch is not None:
            self._held.append(final)
            text_st, think_st = self._stitch
            if text:
                text_st.feed(text)
            if thinking:
                think_st.feed(thinking)
            released: list[ChunkT] = []
            self._release_held(force=True, into=released, keep_last=True)
            out.extend(released[:-1])
            return released[-1]
        if text:
            self._text.append(text)
        if thinking:
            self._thinking.append(thinking)
        return final

    def _finalize(self, chunk: ChunkT) -> ChunkT:
        final: ChunkT = self._adapter.finalize(chunk, self._tokens)
        self.final = final
        return final

    def _hold(self, chunk: ChunkT, out: list[ChunkT]) -> None:
        assert self._stitch is not None
        text_st, think_st = self._stitch
        text, thinking = self._adapter.texts(chunk)
        self._held.append(chunk)
        if text:
            text_st.feed(text)
        if thinking:
            think_st.feed(thinking)
        if text_st.resolved and think_st.resolved:
            self._release_held(force=False, into=out)

    def _release_held(
        self, *, force: bool, into: list[ChunkT] | None = None, keep_last: bool = False
    ) -> None:
        """Trim the cut overlap from the held chunks and deliver the rest (``keep_last``:
        the last held chunk is delivered even when all its text was cut: a final chunk)."""
        if self._stitch is None:
            return
        text_st, think_st = self._stitch
        if force:
            text_st.flush()
            think_st.flush()
        cut_text, cut_think = text_st.cut, think_st.cut
        if self.seams and (cut_text or cut_think):
            self.seams[-1] = msgspec.structs.replace(self.seams[-1], cut=cut_text + cut_think)
        held, self._held, self._stitch = self._held, [], None
        adapter = self._adapter
        last = len(held) - 1
        for i, chunk in enumerate(held):
            text, thinking = adapter.texts(chunk)
            thinking = thinking or ""
            drop_t = min(cut_text, len(text))
            drop_k = min(cut_think, len(thinking))
            cut_text -= drop_t
            cut_think -= drop_k
            text, thinking = text[drop_t:], thinking[drop_k:]
            if drop_t or drop_k:
                if (
                    not text
                    and not thinking
                    and not adapter.has_payload(chunk)
                    and not (keep_last and i == last)
                ):
                    continue
                chunk = adapter.with_texts(chunk, text, thinking)
            if text:
                self._text.append(text)
            if thinking:
                self._thinking.append(thinking)
            if into is not None:
                into.append(chunk)
