"""How the resume machinery reads and rewrites Ollama chunks (the chunk adapters).

See :class:`~resilient_stream.formats.ChunkAdapter`; the table in
``formats/__init__.py`` lists one per chunk type.
"""

from __future__ import annotations

import msgspec

from .types import ChatChunk, GenerateChunk


class GenerateAdapter:
    def texts(self, chunk: GenerateChunk) -> tuple[str, str | None]:
        return chunk.response, chunk.thinking

    def is_done(self, chunk: GenerateChunk) -> bool:
        return chunk.done

    def facts(self, chunk: GenerateChunk) -> tuple[bool, str, str | None, int, bool]:
        n = chunk.eval_count
        return chunk.done, chunk.response, chunk.thinking, n if n is not None else -1, False

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

    def running_tokens(self, chunk: GenerateChunk) -> int:
        """Ollama counts only in the final chunk; a server that sends ``eval_count`` on
        every chunk (the reference server) gives a running count."""
        n = chunk.eval_count
        return n if n is not None else -1

    def attempt_tokens(self, final: GenerateChunk) -> int | None:
        return final.eval_count


class ChatAdapter:
    def texts(self, chunk: ChatChunk) -> tuple[str, str | None]:
        msg = chunk.message
        return msg.content, msg.thinking

    def is_done(self, chunk: ChatChunk) -> bool:
        return chunk.done

    def facts(self, chunk: ChatChunk) -> tuple[bool, str, str | None, int, bool]:
        msg = chunk.message
        n = chunk.eval_count
        payload = bool(msg.tool_calls)
        return chunk.done, msg.content, msg.thinking, n if n is not None else -1, payload

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

    def running_tokens(self, chunk: ChatChunk) -> int:
        """Ollama counts only in the final chunk; a server that sends ``eval_count`` on
        every chunk (the reference server) gives a running count."""
        n = chunk.eval_count
        return n if n is not None else -1

    def attempt_tokens(self, final: ChatChunk) -> int | None:
        return final.eval_count
