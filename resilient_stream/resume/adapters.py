"""How the assembler reads and rewrites one wire format's chunks.

The resume machinery is the same for every API (Ollama NDJSON, OpenAI SSE):
only these few questions differ: where is the text, is this the last chunk,
how to trim text off a chunk after a seam, how to stamp the total token
count on the final chunk, and what a locally made final chunk looks like.
A wire format registers one :class:`ChunkAdapter` per chunk type.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from ..codec.chunks import ChatChunk, GenerateChunk


class ChunkAdapter(Protocol):
    def texts(self, chunk: Any) -> tuple[str, str | None]:
        """(text, thinking) carried by the chunk."""
        ...

    def is_done(self, chunk: Any) -> bool: ...

    def has_payload(self, chunk: Any) -> bool:
        """Carries something besides text (tool calls...): kept even when its text is cut."""
        ...

    def with_texts(self, chunk: Any, text: str, thinking: str) -> Any: ...

    def finalize(self, chunk: Any, tokens: int) -> Any:
        """The final chunk, with the token count of the whole logical stream."""
        ...

    def final_chunk(self, done_reason: str) -> Any:
        """A final chunk made locally (the token budget ran out at an interruption)."""
        ...

    def done_reason(self, final: Any) -> str | None: ...

    def prompt_tokens(self, final: Any) -> int | None: ...


class GenerateAdapter:
    def texts(self, chunk: GenerateChunk) -> tuple[str, str | None]:
        return chunk.response, chunk.thinking

    def is_done(self, chunk: GenerateChunk) -> bool:
        return chunk.done

    def has_payload(self, chunk: GenerateChunk) -> bool:
        return False

    def with_texts(self, chunk: GenerateChunk, text: str, thinking: str) -> GenerateChunk:
        return msgspec.structs.replace(chunk, response=text, thinking=thinking or None)

    def finalize(self, chunk: GenerateChunk, tokens: int) -> GenerateChunk:
        return msgspec.structs.replace(chunk, eval_count=tokens)

    def final_chunk(self, done_reason: str) -> GenerateChunk:
        return GenerateChunk(done=True, done_reason=done_reason)

    def done_reason(self, final: GenerateChunk) -> str | None:
        return final.done_reason

    def prompt_tokens(self, final: GenerateChunk) -> int | None:
        return final.prompt_eval_count


class ChatAdapter:
    def texts(self, chunk: ChatChunk) -> tuple[str, str | None]:
        msg = chunk.message
        return msg.content, msg.thinking

    def is_done(self, chunk: ChatChunk) -> bool:
        return chunk.done

    def has_payload(self, chunk: ChatChunk) -> bool:
        return bool(chunk.message.tool_calls)

    def with_texts(self, chunk: ChatChunk, text: str, thinking: str) -> ChatChunk:
        message = msgspec.structs.replace(chunk.message, content=text, thinking=thinking or None)
        return msgspec.structs.replace(chunk, message=message)

    def finalize(self, chunk: ChatChunk, tokens: int) -> ChatChunk:
        return msgspec.structs.replace(chunk, eval_count=tokens)

    def final_chunk(self, done_reason: str) -> ChatChunk:
        return ChatChunk(done=True, done_reason=done_reason)

    def done_reason(self, final: ChatChunk) -> str | None:
        return final.done_reason

    def prompt_tokens(self, final: ChatChunk) -> int | None:
        return final.prompt_eval_count


_ADAPTERS: dict[type[Any], ChunkAdapter] = {
    GenerateChunk: GenerateAdapter(),
    ChatChunk: ChatAdapter(),
}


def register_adapter(chunk_type: type[Any], adapter: ChunkAdapter) -> None:
    """Teach the resume machinery a new chunk type (a new wire format)."""
    _ADAPTERS[chunk_type] = adapter


def adapter_for(chunk_type: type[Any]) -> ChunkAdapter:
    try:
        return _ADAPTERS[chunk_type]
    except KeyError:
        raise TypeError(f"no ChunkAdapter registered for {chunk_type.__name__}") from None
