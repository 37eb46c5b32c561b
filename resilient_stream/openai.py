"""Resilient streams from OpenAI-compatible servers (vLLM, llama.cpp server, Ollama's /v1).

    from resilient_stream import StreamClient
    from resilient_stream.openai import openai_chat

    async with StreamClient("http://127.0.0.1:8000") as client:
        stream = openai_chat(client, model="m", messages=[{"role": "user", "content": "hi"}],
                             max_tokens=200, flavor="vllm")
        async for chunk in stream:
            if not chunk.done:
                print(chunk.choices[0].delta.content or "", end="")
        print(stream.result.resumes)

Chunks keep OpenAI's field names. The last chunk has ``done=True`` and carries
``choices[0].finish_reason`` and (with ``stream_options={"include_usage":
True}``) ``usage`` covering every attempt. See docs/openai.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .client import StreamClient
from .errors import InvalidRequestError
from .formats.llamacpp.planner import LlamaServerPlanner
from .formats.llamacpp.template import ChatTemplate, Render, TemplateChatPlanner
from .formats.openai.planner import FLAVORS, Flavor, OpenAIPlanner
from .formats.openai.types import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    CompletionChunk,
    CompletionRequest,
    Usage,
)
from .formats.vllm.planner import VllmChatPlanner, VllmCompletionPlanner
from .stream import ResilientStream

__all__ = [
    "FLAVORS",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatTemplate",
    "CompletionChunk",
    "CompletionRequest",
    "Flavor",
    "OpenAIPlanner",
    "Usage",
    "openai_chat",
    "openai_completion",
]


def openai_chat(
    client: StreamClient,
    *,
    model: str,
    messages: Sequence[ChatMessage | Mapping[str, Any]],
    flavor: Flavor = "generic",
    path: str | None = None,
    chat_template: ChatTemplate | str | Render | None = None,
    **fields: Any,
) -> ResilientStream[ChatCompletionChunk]:
    """Stream ``/v1/chat/completions``; resumes by assistant prefill.

    ``fields`` are the request's fields (``max_tokens``, ``temperature``,
    ``tools``, ``response_format``, ``stream_options``, ``seed``...);
    fields we do not model (vLLM's ``top_k``...) are sent unchanged. ``flavor`` says how the server
    continues a trailing assistant message (docs/openai.md); ``path``
    overrides ``/v1/chat/completions``. ``chat_template`` (the model's Jinja
    template, or a callable ``messages -> prompt``): resume through the rendered
    conversation on the completion endpoint instead of by prefill, for servers
    that close the assistant turn (llama-cpp-python); with ``flavor="llama-server"``
    every attempt goes token-exact through ``/completion`` (docs/realmodel.md).
    With ``flavor="vllm"`` (no tools, no response_format) the stream asks for token
    ids and a resume is a completion of the rendered prompt's and the generated ids
    (``formats/vllm/``); without ids in the stream it resumes by prefill.
    """
    msgs = [m if isinstance(m, ChatMessage) else _build(ChatMessage, dict(m)) for m in messages]
    request = _build(ChatCompletionRequest, dict(fields, model=model, messages=msgs))
    _check(request)
    chosen = _flavor(flavor)
    if chat_template is not None:
        templated = TemplateChatPlanner(
            request, ChatTemplate.of(chat_template), flavor=chosen, path=path
        )
        return client.open_stream(templated, ChatCompletionChunk)
    if chosen == "vllm" and not request.tools and request.response_format is None:
        return client.open_stream(VllmChatPlanner(request, path=path), ChatCompletionChunk)
    planner = OpenAIPlanner(request, flavor=chosen, path=path)
    return client.open_stream(planner, ChatCompletionChunk)


def openai_completion(
    client: StreamClient,
    *,
    model: str,
    prompt: str,
    flavor: Flavor = "generic",
    path: str | None = None,
    **fields: Any,
) -> ResilientStream[CompletionChunk]:
    """Stream ``/v1/completions``; resumes with ``prompt + partial``.

    With ``flavor="llama-server"`` every attempt is llama-server's native
    ``/completion`` with token ids, and a resume re-prompts with the exact ids
    generated so far (chunks are still OpenAI completion chunks). With
    ``flavor="vllm"`` (no ``echo``, no ``suffix``) every attempt asks vLLM for token
    ids (``return_token_ids``) and a resume sends the prompt's and the generated ids
    as the prompt; a stream without ids resumes with ``prompt + partial``.
    """
    request = _build(CompletionRequest, dict(fields, model=model, prompt=prompt))
    _check(request)
    if request.best_of is not None and request.best_of > 1:
        raise InvalidRequestError("best_of > 1 cannot be streamed or resumed; leave it unset")
    chosen = _flavor(flavor)
    if chosen == "llama-server":
        return client.open_stream(LlamaServerPlanner(request, path=path), CompletionChunk)
    if chosen == "vllm" and not request.echo and request.suffix is None:
        return client.open_stream(VllmCompletionPlanner(request, path=path), CompletionChunk)
    planner = OpenAIPlanner(request, flavor=chosen, path=path)
    return client.open_stream(planner, CompletionChunk)


def _check(request: ChatCompletionRequest | CompletionRequest) -> None:
    if request.stream is False:
        raise InvalidRequestError(
            "these streams always stream (stream=False is not supported); "
            "use `await openai_chat(...).collect()` for the whole answer"
        )
    if request.n is not None and request.n != 1:
        raise InvalidRequestError(
            "n must be 1: each choice would continue differently, so several choices "
            "cannot be resumed as one stream (open n streams instead)"
        )


def _flavor(flavor: str) -> Flavor:
    if flavor not in FLAVORS:
        raise InvalidRequestError(f"unknown flavor {flavor!r}; one of {sorted(FLAVORS)}")
    return flavor  # type: ignore[return-value]


def _build(tp: type[Any], fields: dict[str, Any]) -> Any:
    """The typed request; fields it does not know are sent as they are (``extra_body``)."""
    known = tp.__struct_fields__
    unknown = {k: v for k, v in fields.items() if k not in known}
    if unknown:
        fields = {k: v for k, v in fields.items() if k in known}
        if tp is not ChatMessage:
            fields["extra_body"] = {**unknown, **(fields.get("extra_body") or {})}
        else:
            raise InvalidRequestError(f"unknown message fields {sorted(unknown)}")
    try:
        return msgspec.convert(fields, tp, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(
            f"invalid {tp.__name__}: {exc} (server-specific fields go in extra_body)"
        ) from None
