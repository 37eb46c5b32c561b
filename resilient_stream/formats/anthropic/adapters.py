"""How the resume machinery reads and rewrites Anthropic chunks (the chunk adapter).

See :class:`~resilient_stream.formats.ChunkAdapter`. Anthropic's ``stop_reason``
``max_tokens`` is the machinery's ``"length"`` (and back, for a final chunk made
locally); every other reason is passed as Anthropic names it.
"""

from __future__ import annotations

import msgspec

from .types import Delta, Event, MessageChunk, Usage

_TO_ENGINE = {"max_tokens": "length"}
_TO_WIRE = {"length": "max_tokens", "stop": "end_turn"}


class MessageAdapter:
    def texts(self, chunk: MessageChunk) -> tuple[str, str | None]:
        ev = chunk.event
        if ev is None or chunk.done or ev.delta is None:
            return "", None
        d = ev.delta
        return d.text or "", d.thinking

    def is_done(self, chunk: MessageChunk) -> bool:
        return chunk.done

    def facts(self, chunk: MessageChunk) -> tuple[bool, str, str | None, int, bool]:
        # no running count (running_tokens)
        return (chunk.done, *self.texts(chunk), -1, self.has_payload(chunk))

    def has_payload(self, chunk: MessageChunk) -> bool:
        """A delta besides text (a tool's JSON, a signature). The text-less events in
        ``before`` are not (they would be bounded by their JSON as if tokens): a resumed
        attempt's opening events are dropped by its plan anyway."""
        ev = chunk.event
        return ev is not None and ev.delta is not None and ev.delta.type not in _TEXTS

    def with_texts(self, chunk: MessageChunk, text: str, thinking: str) -> MessageChunk:
        ev = chunk.event
        assert ev is not None and ev.delta is not None
        d = ev.delta
        if d.thinking is not None:
            delta = msgspec.structs.replace(d, thinking=thinking)
        else:
            delta = msgspec.structs.replace(d, text=text)
        return msgspec.structs.replace(chunk, event=msgspec.structs.replace(ev, delta=delta))

    def finalize(self, chunk: MessageChunk, tokens: int) -> MessageChunk:
        """``message_delta.usage.output_tokens`` (cumulative) counting every attempt."""
        ev = chunk.event
        assert ev is not None
        usage = msgspec.structs.replace(ev.usage or Usage(), output_tokens=tokens)
        return msgspec.structs.replace(chunk, event=msgspec.structs.replace(ev, usage=usage))

    def final_chunk(self, done_reason: str) -> MessageChunk:
        reason = _TO_WIRE.get(done_reason, done_reason)
        return MessageChunk(
            before=[Event(type="content_block_stop", index=0)],
            event=Event(type="message_delta", delta=Delta(stop_reason=reason), usage=Usage()),
            done=True,
        )

    def done_reason(self, final: MessageChunk) -> str | None:
        ev = final.event
        reason = ev.delta.stop_reason if ev is not None and ev.delta is not None else None
        return _TO_ENGINE.get(reason, reason) if reason is not None else None

    def prompt_tokens(self, final: MessageChunk) -> int | None:
        ev = final.event
        return ev.usage.input_tokens if ev is not None and ev.usage is not None else None

    def running_tokens(self, chunk: MessageChunk) -> int:
        """None: ``message_start`` counts only the first token(s), ``message_delta`` all
        of them at the end."""
        return -1

    def attempt_tokens(self, final: MessageChunk) -> int | None:
        ev = final.event
        return ev.usage.output_tokens if ev is not None and ev.usage is not None else None


_TEXTS = frozenset({"text_delta", "thinking_delta"})
