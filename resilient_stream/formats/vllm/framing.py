"""Decoding vLLM's streams with token ids (sans-I/O): the ``"vllm"`` framing.

The body is OpenAI-style SSE, framed by the same
:class:`~resilient_stream.formats.openai.framing.OpenAIFramer`: records without
text (the role chunk, a step that ends inside a UTF-8 character, the finish
and usage chunks) are held until a record with text, or ``[DONE]``, arrives,
and come in the same batch. :class:`VllmDecoder` then folds each held
record's ids, prompt ids and role into the next chunk with text, so that a
chunk's ids are exactly the tokens of its text (``"é"`` streamed as ``""`` +
``[0xC3]`` then ``"é"`` + ``[0xA9]`` becomes one chunk ``"é"``, ``[0xC3, 0xA9]``),
and folds ``finish_reason`` and ``usage`` into one final chunk with
``done=True`` at ``[DONE]``. A body without ``[DONE]`` is an interruption, as
on the ``"sse"`` framing; ``[DONE]`` without a finish reason is a truncation.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...errors import ServerReportedError, TruncatedStreamError
from ..openai.framing import DONE
from ..openai.types import Delta, ErrorInfo, Usage
from ..records import RecordDecoder
from .types import (
    VllmChatChoice,
    VllmChatChunk,
    VllmChunk,
    VllmCompletionChoice,
    VllmCompletionChunk,
)


class VllmDecoder:
    """Records of one read in, :data:`VllmChunk` out (stateless: shared by all streams)."""

    __slots__ = ("_chat", "_records", "chunk_type")

    def __init__(self, chunk_type: type[Any]) -> None:
        if chunk_type not in (VllmCompletionChunk, VllmChatChunk):
            raise TypeError(f"the vllm framing decodes vLLM chunks, not {chunk_type.__name__}")
        self.chunk_type = chunk_type
        self._chat = chunk_type is VllmChatChunk
        self._records: RecordDecoder[Any] = RecordDecoder(chunk_type)

    def decode_lines(self, lines: list[bytes]) -> list[Any]:
        if not lines:
            return []
        done = DONE in lines
        if done:  # anything after [DONE] is ignored
            lines = lines[: lines.index(DONE)]
        chunks = self._records.decode(lines, lambda out: self._fold(out, False))
        return self._fold(chunks, done)

    def _fold(self, chunks: list[Any], done: bool) -> list[Any]:
        out: list[Any] = []
        pending: list[Any] = []  # text-less chunks since the last chunk with text
        finish: str | None = None
        usage: Usage | None = None
        for chunk in chunks:
            if chunk.error is not None or chunk.message is not None:
                exc = ServerReportedError(_error_text(chunk))
                exc.chunks_before = out + pending
                raise exc
            if chunk.usage is not None:
                usage = chunk.usage
            choice = chunk.choices[0] if chunk.choices else None
            if choice is not None and choice.finish_reason is not None:
                finish = choice.finish_reason
            if choice is not None and _has_text(choice):
                out.append(self._merged(pending, chunk) if pending else _unfinished(chunk))
                pending = []
            else:
                pending.append(chunk)
        if done:
            if finish is None:
                cut = TruncatedStreamError(
                    "the stream ended with [DONE] but no finish_reason: the server cut the "
                    "answer short"
                )
                cut.chunks_before = out + pending
                raise cut
            out.append(self._final(chunks, pending, finish, usage))
        elif pending:
            out.extend(pending)  # held too long or an odd server: delivered as they are
        return out

    def _merged(self, pending: list[Any], chunk: Any) -> Any:
        """``chunk`` with the ids, prompt ids and role of the text-less chunks before it."""
        ids = _joined_ids([*pending, chunk])
        prompt = next((p for c in (*pending, chunk) if (p := c.prompt_ids()) is not None), None)
        choice = chunk.choices[0]
        if self._chat:
            delta = choice.delta
            role = next((c.choices[0].delta.role for c in pending if _role(c)), None)
            if delta.role is None and role is not None:
                delta = msgspec.structs.replace(delta, role=role)
            choice = msgspec.structs.replace(choice, delta=delta, token_ids=ids, finish_reason=None)
            return msgspec.structs.replace(
                chunk, choices=[choice, *chunk.choices[1:]], prompt_token_ids=prompt
            )
        choice = msgspec.structs.replace(
            choice, token_ids=ids, prompt_token_ids=prompt, finish_reason=None
        )
        return msgspec.structs.replace(chunk, choices=[choice, *chunk.choices[1:]])

    def _final(
        self, chunks: list[Any], pending: list[Any], finish: str, usage: Usage | None
    ) -> VllmChunk:
        ids = _joined_ids(pending) if pending else None  # e.g. the EOS token's id
        final: VllmChunk
        if self._chat:
            final = VllmChatChunk(
                choices=[VllmChatChoice(delta=Delta(), finish_reason=finish, token_ids=ids)],
                usage=usage,
                done=True,
            )
        else:
            final = VllmCompletionChunk(
                choices=[VllmCompletionChoice(finish_reason=finish, token_ids=ids)],
                usage=usage,
                done=True,
            )
        for chunk in chunks:  # the latest non-empty id, model... (usage chunks may lack some)
            final.id = chunk.id or final.id
            final.created = chunk.created or final.created
            final.model = chunk.model or final.model
            final.system_fingerprint = chunk.system_fingerprint or final.system_fingerprint
        return final


def _has_text(choice: Any) -> bool:
    if isinstance(choice, VllmChatChoice):
        d = choice.delta
        return bool(d.content or d.reasoning_content or d.reasoning or d.tool_calls or d.refusal)
    return bool(choice.text)


def _role(chunk: Any) -> bool:
    return bool(chunk.choices) and chunk.choices[0].delta.role is not None


def _joined_ids(chunks: list[Any]) -> list[int] | None:
    """The ids of several chunks in order; None if none of them carried any (an old
    vLLM, or hidden reasoning): an absent list is not an empty one."""
    ids: list[int] = []
    seen = False
    for chunk in chunks:
        part = chunk.ids()
        if part is not None:
            seen = True
            ids.extend(part)
    return ids if seen else None


def _unfinished(chunk: Any) -> Any:
    """A chunk with text that also finishes: its text goes on, the finish goes on the
    final chunk made at ``[DONE]``."""
    choice = chunk.choices[0]
    if choice.finish_reason is None:
        return chunk
    choice = msgspec.structs.replace(choice, finish_reason=None)
    return msgspec.structs.replace(chunk, choices=[choice, *chunk.choices[1:]])


def _error_text(chunk: Any) -> str:
    err = chunk.error
    if isinstance(err, ErrorInfo):
        extra = ", ".join(
            f"{k}={v}" for k, v in (("type", err.type), ("code", err.code)) if v is not None
        )
        return f"{err.message} ({extra})" if extra else err.message
    if isinstance(err, str):
        return err
    return chunk.message or "unknown error"
