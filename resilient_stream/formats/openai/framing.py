"""OpenAI-compatible streaming: the SSE record framer and the chunk decoder (sans-I/O).

How the end of a stream is marked
---------------------------------
OpenAI-compatible servers end a stream with a chunk carrying
``finish_reason``, then (with ``stream_options: {"include_usage": true}``) a
chunk with ``choices: []`` and ``usage``, then ``data: [DONE]``. The
resume machinery counts one token per chunk it is given, so chunks that
carry no text (the role-only opening chunk, the finish chunk, the usage
chunk) must not reach it as separate chunks:

* :class:`OpenAIFramer` (one per attempt) holds chunk records that carry no
  text (or carry a ``finish_reason``) until a record with text, or
  ``[DONE]``, arrives, and hands them over in the same batch (a cheap byte
  test decides; a wrong guess only delays a record, never loses one). Error
  records and anything that is not a chunk pass at once.
* :class:`OpenAIDecoder` (stateless) folds a held role into the next text
  chunk, and folds ``finish_reason``, ``usage``, ``id`` and ``model`` of the
  trailing chunks into **one final chunk with** ``done=True`` made at
  ``[DONE]``. ``done`` is our field, not OpenAI's: it is never on the wire.

So the caller sees text chunks, then exactly one final chunk (``done``,
``choices[0].finish_reason``, ``usage`` when the server sent it). A body that
ends without ``[DONE]`` is a truncation and is resumed, like an NDJSON body
without ``done: true``. After resumes, the final chunk's
``usage.completion_tokens`` (and ``total_tokens``) cover all attempts, like
Ollama's ``eval_count``; ``prompt_tokens`` is the last attempt's, as the
server counted it (it includes the re-sent partial output).

An ``{"error": {...}}`` record (or vLLM's ``{"object": "error", ...}``)
raises :class:`ServerReportedError`, retryable unless it names a bad
request.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ...errors import ServerReportedError, TruncatedStreamError
from ..records import RecordDecoder
from ..sse import DEFAULT_MAX_EVENT_BYTES, SseParser
from .types import (
    ChatChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionChunk,
    Delta,
    ErrorInfo,
    Usage,
)

#: The record that ends a stream.
DONE = b"[DONE]"

#: A record with text: a non-empty string in content/text/reasoning, or tool calls.
_HAS_TEXT = re.compile(
    rb'"(?:content|text|reasoning_content|reasoning|refusal)":\s*"[^"]|"tool_calls":\s*\[\s*\{'
)
#: A record that ends the choice (held even with text, so its finish_reason reaches
#: the final chunk).
_FINISHES = re.compile(rb'"finish_reason":\s*"')

#: At most this many text-less records are held (bounded memory on odd servers).
MAX_HELD = 64


class OpenAIFramer:
    """SSE records of one attempt, text-less ones held until text or ``[DONE]`` follows."""

    __slots__ = ("_held", "_parser")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._parser = SseParser(max_event_bytes)
        self._held: list[bytes] = []

    @property
    def pending(self) -> int:
        return self._parser.pending + sum(len(r) for r in self._held)

    def feed(self, data: bytes) -> list[bytes]:
        records = self._parser.feed_data(data)
        if not records:
            return records
        held = self._held
        if not held and len(records) == 1 and not held_back(records[0]):
            return records  # the steady state: one token per read
        out: list[bytes] = []
        for record in records:
            if held_back(record):
                held.append(record)
                if len(held) > MAX_HELD:
                    out.extend(held)
                    held.clear()
                continue
            if held:
                out.extend(held)
                held.clear()
            out.append(record)
        return out

    def close(self) -> bytes:
        """End of body: an unfinished event (held records are dropped: a body that
        ends without ``[DONE]`` is resumed, and the resume repeats what they said)."""
        self._held.clear()
        return self._parser.close()


def held_back(record: bytes) -> bool:
    """A chunk without text (role-only, finish, usage) or one that finishes the choice:
    held until text or ``[DONE]`` follows (the framer here, and the SDK transport's
    pass-through, which must flush records at the same points).
    Anything else (text, errors, ``[DONE]``, garbage) goes through at once."""
    if record.endswith(b'"finish_reason":null}]}') or b'"finish_reason":null' in record:
        # Compact JSON, as vLLM, llama.cpp, Ollama and OpenAI send it: two scans at most.
        for key in _TEXT_KEYS:
            i = record.find(key)
            if i >= 0:
                if record[i + len(key) : i + len(key) + 1] != b'"':
                    return False
                break
    elif b'"choices"' not in record:
        return False
    return _HAS_TEXT.search(record) is None or _FINISHES.search(record) is not None


_TEXT_KEYS = (b'"content":"', b'"text":"', b'"reasoning_content":"', b'"reasoning":"')


# --- decoding ------------------------------------------------------------------------


class OpenAIDecoder:
    """Records of one read in, typed chunks out (stateless: shared by all streams)."""

    __slots__ = ("_chat", "_records", "chunk_type")

    def __init__(self, chunk_type: type[Any]) -> None:
        if chunk_type not in (ChatCompletionChunk, CompletionChunk):
            raise TypeError(f"the sse framing decodes OpenAI chunks, not {chunk_type.__name__}")
        self.chunk_type = chunk_type
        self._chat = chunk_type is ChatCompletionChunk
        self._records: RecordDecoder[Any] = RecordDecoder(chunk_type)

    def decode_lines(self, lines: list[bytes]) -> list[Any]:
        if not lines:
            return []
        done = lines[-1] == DONE
        records = lines[:-1] if done else lines
        if DONE in records:  # anything after [DONE] is ignored
            records = records[: records.index(DONE)]
            done = True
        chunks = self._decode(records)
        if len(chunks) == 1 and not done:
            c = chunks[0]
            if c.error is None and c.message is None and self._has_text(c):
                return chunks
        return self._fold(chunks, done)

    def _decode(self, records: list[bytes]) -> list[Any]:
        return self._records.decode(records, lambda out: self._fold(out, False))

    def _has_text(self, chunk: Any) -> bool:
        if not chunk.choices:
            return False
        c = chunk.choices[0]
        if isinstance(c, ChatChoice):
            d = c.delta
            return bool(
                d.content or d.reasoning_content or d.reasoning or d.tool_calls or d.refusal
            )
        return bool(c.text)

    def _fold(self, chunks: list[Any], done: bool) -> list[Any]:
        """Fold text-less chunks into the next text chunk (role) or the final chunk."""
        out: list[Any] = []
        role: str | None = None
        finish: str | None = None
        usage: Usage | None = None
        pending: list[Any] = []
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
            if self._has_text(chunk):
                pending.clear()
                if choice is not None and choice.finish_reason is not None:
                    choice = msgspec.structs.replace(choice, finish_reason=None)
                    chunk = msgspec.structs.replace(chunk, choices=[choice, *chunk.choices[1:]])
                if (
                    role is not None
                    and isinstance(choice, ChatChoice)
                    and choice.delta.role is None
                ):
                    delta = msgspec.structs.replace(choice.delta, role=role)
                    choice = msgspec.structs.replace(choice, delta=delta)
                    chunk = msgspec.structs.replace(chunk, choices=[choice, *chunk.choices[1:]])
                role = None
                out.append(chunk)
                continue
            if isinstance(choice, ChatChoice) and choice.delta.role is not None:
                role = choice.delta.role
            pending.append(chunk)
        if done:
            if finish is None:
                # [DONE] without a finish_reason: the server stopped this answer early
                # (llama-cpp-python does so when another request arrives). Not a success.
                cut = TruncatedStreamError(
                    "the stream ended with [DONE] but no finish_reason: the server cut the "
                    "answer short"
                )
                cut.chunks_before = out + pending
                raise cut
            out.append(self._final(chunks, finish, usage))
        elif pending:
            out.extend(pending)  # held too long or odd server: deliver as they are
        return out

    def _final(self, chunks: list[Any], finish: str | None, usage: Usage | None) -> Any:
        final: Any
        if self._chat:
            final = ChatCompletionChunk(
                choices=[ChatChoice(delta=Delta(), finish_reason=finish)], usage=usage, done=True
            )
        else:
            final = CompletionChunk(
                choices=[CompletionChoice(finish_reason=finish)], usage=usage, done=True
            )
        for chunk in chunks:  # the latest non-empty id, model... (usage chunks may lack some)
            final.id = chunk.id or final.id
            final.created = chunk.created or final.created
            final.model = chunk.model or final.model
            final.system_fingerprint = chunk.system_fingerprint or final.system_fingerprint
        return final


def _error_text(chunk: ChatCompletionChunk | CompletionChunk) -> str:
    err = chunk.error
    if isinstance(err, ErrorInfo):
        extra = ", ".join(
            f"{k}={v}" for k, v in (("type", err.type), ("code", err.code)) if v is not None
        )
        return f"{err.message} ({extra})" if extra else err.message
    if isinstance(err, str):
        return err
    return chunk.message or "unknown error"
