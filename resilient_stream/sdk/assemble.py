"""A non-streaming call, upgraded to streaming, answered as one JSON body (sans-I/O).

The SDK asked for ``stream: false``; the transport streamed it (so a long
generation resumes like any stream) and gives the SDK the body the server would
have sent, built from the chunks the engine delivered:

* Ollama ``/api/generate``: the final chunk with the whole ``response`` (and
  ``thinking``); ``/api/chat``: the final chunk with the whole ``message``
  (``content``, ``thinking``, ``tool_calls``). Counts are the final chunk's, which
  cover every attempt.
* OpenAI ``/v1/chat/completions``: a ``chat.completion`` object, its one choice's
  ``message`` (``content``, ``reasoning_content``, merged ``tool_calls``),
  ``finish_reason`` and ``usage``; ``/v1/completions``: a ``text_completion``.
* Anthropic ``/v1/messages`` (text only: calls with tools or thinking are not
  upgraded): a ``message`` with the first attempt's ``id`` and ``model``, one text
  block, ``stop_reason`` and ``usage`` (``output_tokens`` over every attempt).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..formats import adapter_for
from ..formats.anthropic.types import MessageChunk
from ..formats.ollama import encoder as ollama_encoder
from ..formats.ollama.types import ChatChunk, GenerateChunk, Message, ToolCall
from ..formats.openai.types import ChatCompletionChunk, CompletionChunk

_enc = msgspec.json.Encoder().encode


class Collector:
    """Chunks in (in order, the final one last), the caller's JSON body out."""

    def __init__(self, caller_type: type[Any]) -> None:
        self._type = caller_type
        self._adapter = adapter_for(caller_type)
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._ollama_tools: list[ToolCall] = []
        self._openai_tools: dict[int, dict[str, Any]] = {}
        self._logprobs: list[Any] = []
        self._message: dict[str, Any] | None = None  # Anthropic's message_start
        self.final: Any = None
        self.chunks = 0

    def add(self, chunk: Any) -> None:
        self.chunks += 1
        if self._adapter.is_done(chunk):
            self.final = chunk
        text, thinking = self._adapter.texts(chunk)
        if text:
            self._text.append(text)
        if thinking:
            self._thinking.append(thinking)
        if isinstance(chunk, MessageChunk):
            if self._message is None:
                for ev in chunk.before:
                    if ev.type == "message_start" and ev.message is not None:
                        self._message = ev.message
        elif isinstance(chunk, ChatChunk) and chunk.message.tool_calls:
            self._ollama_tools.extend(chunk.message.tool_calls)
        elif isinstance(chunk, ChatCompletionChunk):
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or ():
                    self._merge_tool_call(call)
        if isinstance(chunk, GenerateChunk | ChatChunk) and chunk.logprobs:
            self._logprobs.extend(chunk.logprobs)

    def _merge_tool_call(self, delta: Any) -> None:
        call = self._openai_tools.setdefault(
            delta.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.id:
            call["id"] = delta.id
        if delta.type:
            call["type"] = delta.type
        if delta.function is not None:
            call["function"]["name"] += delta.function.name or ""
            call["function"]["arguments"] += delta.function.arguments or ""

    def body(self) -> bytes:
        final = self.final
        assert final is not None, "the stream ended without its final chunk"
        text, thinking = "".join(self._text), "".join(self._thinking)
        if isinstance(final, GenerateChunk):
            whole = msgspec.structs.replace(
                final, response=text, thinking=thinking or None, logprobs=self._logprobs or None
            )
            return ollama_encoder.encode_chunk(whole)
        if isinstance(final, ChatChunk):
            message = Message(
                role=final.message.role or "assistant",
                content=text,
                thinking=thinking or None,
                tool_calls=self._ollama_tools or None,
            )
            chat = msgspec.structs.replace(final, message=message, logprobs=self._logprobs or None)
            return ollama_encoder.encode_chunk(chat)
        if isinstance(final, ChatCompletionChunk):
            return self._chat_completion(final, text, thinking)
        if isinstance(final, MessageChunk):
            return self._message_body(final, text)
        assert isinstance(final, CompletionChunk)
        choice = final.choices[0] if final.choices else None
        return _enc(
            {
                **_head(final, "text_completion"),
                "choices": [
                    {
                        "index": 0,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": choice.finish_reason if choice else "stop",
                    }
                ],
                **_usage(final),
            }
        )

    def _message_body(self, final: MessageChunk, text: str) -> bytes:
        start = self._message or {}
        ev = final.event
        delta = ev.delta if ev is not None else None
        usage = dict(start.get("usage") or {})
        if ev is not None and ev.usage is not None:
            usage.update(msgspec.to_builtins(ev.usage))
        return _enc(
            {
                "id": start.get("id", ""),
                "type": "message",
                "role": "assistant",
                "model": start.get("model", ""),
                "content": [{"type": "text", "text": text}],
                "stop_reason": delta.stop_reason if delta is not None else None,
                "stop_sequence": delta.stop_sequence if delta is not None else None,
                "usage": usage,
            }
        )

    def _chat_completion(self, final: ChatCompletionChunk, text: str, thinking: str) -> bytes:
        choice = final.choices[0] if final.choices else None
        tools = [self._openai_tools[i] for i in sorted(self._openai_tools)]
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if tools else "")}
        if thinking:
            message["reasoning_content"] = thinking
        if tools:
            message["tool_calls"] = tools
        return _enc(
            {
                **_head(final, "chat.completion"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": choice.finish_reason if choice else "stop",
                    }
                ],
                **_usage(final),
            }
        )


def _head(chunk: ChatCompletionChunk | CompletionChunk, kind: str) -> dict[str, Any]:
    head: dict[str, Any] = {
        "id": chunk.id,
        "object": kind,
        "created": chunk.created,
        "model": chunk.model,
    }
    if chunk.system_fingerprint is not None:
        head["system_fingerprint"] = chunk.system_fingerprint
    return head


def _usage(chunk: ChatCompletionChunk | CompletionChunk) -> dict[str, Any]:
    return {"usage": msgspec.to_builtins(chunk.usage)} if chunk.usage is not None else {}
