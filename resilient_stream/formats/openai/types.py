"""OpenAI-compatible streaming: the msgspec types of requests and response chunks.

Sans-I/O. Field names are OpenAI's (``/v1/chat/completions`` and
``/v1/completions`` with ``stream: true``), so code written for the OpenAI
SDK reads our chunks unchanged. Unknown fields are ignored. One declaration
serves the client (``framing.py`` decodes into these), the encoder back to
SSE bytes (``encoder.py``) and the reference server.
"""

from __future__ import annotations

from typing import Any

import msgspec

# --- response chunks ------------------------------------------------------------


class FunctionCallDelta(msgspec.Struct, omit_defaults=True, gc=False):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True, gc=False):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: FunctionCallDelta | None = None


class Delta(msgspec.Struct, omit_defaults=True, gc=False):
    role: str | None = None
    content: str | None = None
    #: vLLM, llama.cpp, DeepSeek spell the reasoning text ``reasoning_content``...
    reasoning_content: str | None = None
    #: ... Ollama's /v1 and newer vLLM spell it ``reasoning``.
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None


class ChatChoice(msgspec.Struct, omit_defaults=True, gc=False):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None
    logprobs: Any = None


class CompletionChoice(msgspec.Struct, omit_defaults=True, gc=False):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: Any = None


class Usage(msgspec.Struct, omit_defaults=True, gc=False):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: Any = None
    completion_tokens_details: Any = None


class Timings(msgspec.Struct, omit_defaults=True, gc=False):
    """llama-server's ``timings`` (on every chunk with ``timings_per_token: true``)."""

    #: Tokens generated so far for this request (a running count).
    predicted_n: int | None = None
    prompt_n: int | None = None


class ErrorInfo(msgspec.Struct, omit_defaults=True, gc=False):
    message: str = ""
    type: str | None = None
    code: str | int | None = None
    param: Any = None


class _ChunkBase(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    id: str = ""
    created: int = 0
    model: str = ""
    system_fingerprint: str | None = None
    usage: Usage | None = None
    #: llama-server's per-chunk counts (``timings_per_token``).
    timings: Timings | None = None
    #: ``{"error": {...}}`` (or a bare string): raised by the decoder, never delivered.
    error: ErrorInfo | str | None = None
    #: vLLM's older error records: ``{"object": "error", "message": ...}``.
    message: str | None = None
    #: Ours, never on the wire: the final chunk, made by the decoder at ``[DONE]``.
    done: bool = False


class ChatCompletionChunk(_ChunkBase, kw_only=True):
    """One ``data:`` event of ``/v1/chat/completions`` (``stream: true``)."""

    object: str = "chat.completion.chunk"
    choices: list[ChatChoice] = msgspec.field(default_factory=list)


class CompletionChunk(_ChunkBase, kw_only=True):
    """One ``data:`` event of ``/v1/completions`` (``stream: true``)."""

    object: str = "text_completion"
    choices: list[CompletionChoice] = msgspec.field(default_factory=list)


OpenAIChunk = ChatCompletionChunk | CompletionChunk

# --- requests --------------------------------------------------------------------


class StreamOptions(msgspec.Struct, omit_defaults=True, gc=False):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class ChatMessage(msgspec.Struct, omit_defaults=True, gc=False):
    role: str
    #: A string, or a list of content parts (``{"type": "text", "text": ...}``...).
    content: str | list[Any] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _RequestBase(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    model: str
    #: None on the wire means false (OpenAI's default); the planner always sends true.
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    #: Server-specific fields (vLLM's ``top_k``, ``chat_template_kwargs``...), sent as is.
    extra_body: dict[str, Any] | None = None


class ChatCompletionRequest(_RequestBase, kw_only=True):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: Any = None
    reasoning_effort: str | None = None
    #: vLLM (and our reference server): continue a trailing assistant message.
    continue_final_message: bool | None = None
    add_generation_prompt: bool | None = None


class CompletionRequest(_RequestBase, kw_only=True):
    prompt: str
    suffix: str | None = None
    echo: bool | None = None
    logprobs: int | None = None
    best_of: int | None = None


_encoder = msgspec.json.Encoder()


def encode_request(request: ChatCompletionRequest | CompletionRequest) -> bytes:
    """The JSON body: the typed fields, with ``extra_body`` merged in at the top level."""
    extra = request.extra_body
    if not extra:
        return _encoder.encode(request)
    fields = msgspec.to_builtins(msgspec.structs.replace(request, extra_body=None))
    fields.update(extra)
    return _encoder.encode(fields)
