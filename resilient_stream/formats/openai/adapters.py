"""How the resume machinery reads and rewrites OpenAI chunks (the chunk adapters).

See :class:`~resilient_stream.formats.ChunkAdapter`; the table in
``formats/__init__.py`` lists one per chunk type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .types import ChatChoice, ChatCompletionChunk, CompletionChoice, CompletionChunk, Delta


class ChatCompletionAdapter:
    def texts(self, chunk: ChatCompletionChunk) -> tuple[str, str | None]:
        if not chunk.choices:
            return "", None
        d = chunk.choices[0].delta
        return d.content or "", d.reasoning_content or d.reasoning

    def is_done(self, chunk: ChatCompletionChunk) -> bool:
        return chunk.done

    def facts(self, chunk: ChatCompletionChunk) -> tuple[bool, str, str | None, int, bool]:
        text, thinking = self.texts(chunk)
        return chunk.done, text, thinking, _running(chunk), self.has_payload(chunk)

    def has_payload(self, chunk: ChatCompletionChunk) -> bool:
        return bool(chunk.choices) and bool(chunk.choices[0].delta.tool_calls)

    def with_texts(
        self, chunk: ChatCompletionChunk, text: str, thinking: str
    ) -> ChatCompletionChunk:
        choice = chunk.choices[0]
        d = choice.delta
        if d.reasoning is not None and d.reasoning_content is None:
            delta = msgspec.structs.replace(d, content=text or None, reasoning=thinking or None)
        else:
            delta = msgspec.structs.replace(
                d, content=text or None, reasoning_content=thinking or None
            )
        new_choice = msgspec.structs.replace(choice, delta=delta)
        return msgspec.structs.replace(chunk, choices=[new_choice, *chunk.choices[1:]])

    def finalize(self, chunk: ChatCompletionChunk, tokens: int) -> ChatCompletionChunk:
        out: ChatCompletionChunk = _with_usage(chunk, tokens)
        return out

    def final_chunk(self, done_reason: str) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            choices=[ChatChoice(delta=Delta(), finish_reason=done_reason)], done=True
        )

    def done_reason(self, final: ChatCompletionChunk) -> str | None:
        return final.choices[0].finish_reason if final.choices else None

    def prompt_tokens(self, final: ChatCompletionChunk) -> int | None:
        return final.usage.prompt_tokens if final.usage is not None else None

    def running_tokens(self, chunk: ChatCompletionChunk) -> int:
        return _running(chunk)

    def attempt_tokens(self, final: ChatCompletionChunk) -> int | None:
        return final.usage.completion_tokens if final.usage is not None else None


class CompletionAdapter:
    def texts(self, chunk: CompletionChunk) -> tuple[str, str | None]:
        return (chunk.choices[0].text, None) if chunk.choices else ("", None)

    def is_done(self, chunk: CompletionChunk) -> bool:
        return chunk.done

    def facts(self, chunk: CompletionChunk) -> tuple[bool, str, str | None, int, bool]:
        text = chunk.choices[0].text if chunk.choices else ""
        return chunk.done, text, None, _running(chunk), False

    def has_payload(self, chunk: CompletionChunk) -> bool:
        return False

    def with_texts(self, chunk: CompletionChunk, text: str, thinking: str) -> CompletionChunk:
        choice = msgspec.structs.replace(chunk.choices[0], text=text)
        return msgspec.structs.replace(chunk, choices=[choice, *chunk.choices[1:]])

    def finalize(self, chunk: CompletionChunk, tokens: int) -> CompletionChunk:
        out: CompletionChunk = _with_usage(chunk, tokens)
        return out

    def final_chunk(self, done_reason: str) -> CompletionChunk:
        return CompletionChunk(choices=[CompletionChoice(finish_reason=done_reason)], done=True)

    def done_reason(self, final: CompletionChunk) -> str | None:
        return final.choices[0].finish_reason if final.choices else None

    def prompt_tokens(self, final: CompletionChunk) -> int | None:
        return final.usage.prompt_tokens if final.usage is not None else None

    def running_tokens(self, chunk: CompletionChunk) -> int:
        return _running(chunk)

    def attempt_tokens(self, final: CompletionChunk) -> int | None:
        return final.usage.completion_tokens if final.usage is not None else None


def _running(chunk: Any) -> int:
    """llama-server's ``timings.predicted_n``, else a per-chunk ``usage`` (vLLM's
    ``continuous_usage_stats``): the request's tokens so far; -1 if neither."""
    timings = chunk.timings
    if timings is not None and timings.predicted_n is not None:
        n: int = timings.predicted_n
        return n
    usage = chunk.usage
    return usage.completion_tokens if usage is not None else -1


def _with_usage(chunk: Any, tokens: int) -> Any:
    """The final chunk's usage, counting the completion tokens of every attempt."""
    usage = chunk.usage
    if usage is None:
        return chunk
    usage = msgspec.structs.replace(
        usage, completion_tokens=tokens, total_tokens=usage.prompt_tokens + tokens
    )
    return msgspec.structs.replace(chunk, usage=usage)
