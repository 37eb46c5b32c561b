"""Which requests the SDK transport resumes (sans-I/O): method, path and JSON body.

A call is recognised when its path ends with one a format defines, its body is a
JSON object whose fields all belong to that format's request type (so nothing the
SDK sent is lost in the re-sent requests) and it asks for what the resume engine
can continue: one choice, streamed. Everything else passes through.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from ..formats.anthropic.planner import PATH as MESSAGES_PATH
from ..formats.anthropic.planner import AnthropicPlanner
from ..formats.anthropic.types import MessageParam, MessagesRequest
from ..formats.ollama.planner import ResumePlanner
from ..formats.ollama.types import ChatRequest, GenerateRequest, Message
from ..formats.openai.planner import CHAT_PATH, COMPLETION_PATH, Flavor, OpenAIPlanner
from ..formats.openai.types import ChatCompletionRequest, ChatMessage, CompletionRequest
from ..formats.plan import Planner
from ..formats.vllm.planner import VllmChatPlanner, VllmCompletionPlanner
from .wire import AnthropicSse, Ndjson, Sse, Wire

_OLLAMA_PATHS = {"/api/generate": GenerateRequest, "/api/chat": ChatRequest}
_OPENAI_PATHS = {CHAT_PATH: ChatCompletionRequest, COMPLETION_PATH: CompletionRequest}
_ANTHROPIC_PATHS = {MESSAGES_PATH: MessagesRequest}
#: Every path suffix a call is recognised by, and its request type (searched per request).
_PATHS = (*_OLLAMA_PATHS.items(), *_OPENAI_PATHS.items(), *_ANTHROPIC_PATHS.items())


class Call(msgspec.Struct, frozen=True, gc=False):
    """A recognised call: where its engine lives and how its attempts are planned.

    (A Struct: one is made per request, and a frozen dataclass takes 0.8 us to.)"""

    base: str
    planner: Planner
    caller_type: type[Any]
    wire: type[Wire]
    #: The SDK asked for one JSON body: streamed here, answered assembled (assemble.py).
    upgraded: bool = False
    #: The first attempt's body when it is not the SDK's own: the same request asking
    #: vLLM for token ids (flavor ``"vllm"``), so that a resume is token-exact.
    first_body: bytes | None = None


def recognise(
    request: httpx.Request, body: bytes, flavor: Flavor, *, upgrade: bool = True
) -> Call | None:
    """The call ``request`` makes, if the engine can resume it; ``upgrade``: also the
    non-streaming ones (streamed, then answered as the one body the SDK expects)."""
    if request.method != "POST":
        return None
    url = request.url
    raw = str(url)
    if "?" in raw:
        return None  # a query: not a call the engine re-sends
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        return None
    # the URL as sent ends with the path (one str(), no decoding); only a percent-encoded
    # path or a fragment needs the decoded path (copy_with costs ~30x more)
    found = next((entry for entry in _PATHS if raw.endswith(entry[0])), None)
    if found is not None:
        base = raw[: -len(found[0])].rstrip("/")
    else:
        if "%" not in raw and "#" not in raw:
            return None
        path = url.path
        found = next((entry for entry in _PATHS if path.endswith(entry[0])), None)
        if found is None:
            return None
        rest = path[: -len(found[0])] or "/"
        base = str(url.copy_with(path=rest, fragment=None)).rstrip("/")
    tp = found[1]
    try:
        fields = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(fields, dict):
        return None
    if tp in (GenerateRequest, ChatRequest):
        return _ollama_call(base, tp, fields, upgrade)
    if tp is MessagesRequest:
        return _anthropic_call(base, fields, upgrade)
    return _openai_call(base, tp, fields, flavor, upgrade)


def _ollama_call(base: str, tp: type[Any], fields: dict[str, Any], upgrade: bool) -> Call | None:
    upgraded = fields.get("stream", True) is False
    if upgraded:
        if not upgrade:
            return None
        fields = {**fields, "stream": True}
    elif fields.get("stream", True) is not True:
        return None
    messages = fields.get("messages")
    if tp is ChatRequest and not _known_messages(messages, Message.__struct_fields__):
        return None
    try:
        request = msgspec.convert(fields, tp)  # forbid_unknown_fields: unknown ones pass through
    except msgspec.ValidationError:
        return None
    planner = ResumePlanner(request)
    return Call(base, planner, planner.caller_chunk_type, Ndjson, upgraded)


def _openai_call(
    base: str, tp: type[Any], fields: dict[str, Any], flavor: Flavor, upgrade: bool
) -> Call | None:
    sent = fields
    upgraded = fields.get("stream") in (False, None)
    if upgraded:
        if not upgrade:
            return None
        # usage in the final chunk: the assembled body carries it, like the server's
        options = fields.get("stream_options")
        options = {**options, "include_usage": True} if isinstance(options, dict) else None
        fields = {**fields, "stream": True, "stream_options": options or {"include_usage": True}}
    elif fields.get("stream") is not True:
        return None
    if fields.get("n", 1) not in (1, None):
        return None
    best_of = fields.get("best_of")
    if isinstance(best_of, int) and best_of > 1:
        return None
    if tp is ChatCompletionRequest and not _known_messages(
        fields.get("messages"), ChatMessage.__struct_fields__
    ):
        return None
    known = tp.__struct_fields__
    unknown = {k: v for k, v in fields.items() if k not in known}
    if unknown:
        fields = {k: v for k, v in fields.items() if k in known}
        fields["extra_body"] = {**unknown, **(fields.get("extra_body") or {})}
    try:
        request = msgspec.convert(fields, tp)
    except msgspec.ValidationError:
        return None
    if flavor == "vllm":
        ids = _vllm_planner(request)
        if ids is not None:
            # Every attempt asks for token ids, the first (the SDK's request) too: the
            # SDK's chunks then carry ``token_ids`` fields, which SDKs keep as extras.
            first = None if upgraded else msgspec.json.encode({**sent, "return_token_ids": True})
            return Call(base, ids, ids.caller_chunk_type, Sse, upgraded, first)
    planner = OpenAIPlanner(request, flavor=flavor)
    return Call(base, planner, planner.caller_chunk_type, Sse, upgraded)


def _vllm_planner(request: Any) -> VllmChatPlanner | VllmCompletionPlanner | None:
    """vLLM's token-id planner where it applies (as ``openai_chat``/``openai_completion``
    choose it), else None (the text path of flavor ``"vllm"``)."""
    if isinstance(request, ChatCompletionRequest):
        if request.tools or request.response_format is not None:
            return None
        return VllmChatPlanner(request)
    if request.echo or request.suffix is not None:
        return None
    return VllmCompletionPlanner(request)


def _anthropic_call(base: str, fields: dict[str, Any], upgrade: bool) -> Call | None:
    """``stream: true``; or a non-streaming call of text only (no tools, no thinking:
    the assembled body has one text block), when upgraded."""
    if not isinstance(fields.get("max_tokens"), int):
        return None
    upgraded = fields.get("stream") in (False, None)
    if upgraded:
        thinking = fields.get("thinking")
        thinks = isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")
        if not upgrade or fields.get("tools") or thinks:
            return None
        fields = {**fields, "stream": True}
    elif fields.get("stream") is not True:
        return None
    if not _known_messages(fields.get("messages"), MessageParam.__struct_fields__):
        return None
    known = MessagesRequest.__struct_fields__
    unknown = {k: v for k, v in fields.items() if k not in known}
    if unknown:
        fields = {k: v for k, v in fields.items() if k in known}
        fields["extra_body"] = {**unknown, **(fields.get("extra_body") or {})}
    try:
        request = msgspec.convert(fields, MessagesRequest)
    except msgspec.ValidationError:
        return None
    planner = AnthropicPlanner(request)
    return Call(base, planner, planner.caller_chunk_type, AnthropicSse, upgraded)


def _known_messages(messages: Any, known: tuple[str, ...]) -> bool:
    if not isinstance(messages, list):
        return False
    return all(isinstance(m, dict) and all(k in known for k in m) for m in messages)
