"""Resume planning for OpenAI-compatible servers (sans-I/O).

* ``/v1/chat/completions``: the messages plus a trailing assistant message
  holding the partial output ("prefill"); a caller's own trailing assistant
  message is extended instead. Whether a server *continues* that message
  depends on the server, hence the :data:`Flavor`:

  - ``"generic"`` (default; Ollama's /v1, llama.cpp server, our reference
    server): only the trailing assistant message is sent. Ollama and
    llama.cpp continue it.
  - ``"vllm"``: adds ``continue_final_message: true`` and
    ``add_generation_prompt: false`` (vLLM otherwise closes the turn and
    starts a new answer). This is the text path: ``openai.py`` first takes
    vLLM's token ids (``return_token_ids``; ``formats/vllm/``), a resume by
    ``prompt_token_ids`` + generated ids on ``/v1/completions``, and comes here
    only for a stream without ids (an older vLLM), or a request the ids path
    does not cover (echo, suffix, tools, response_format, stop strings longer
    than one character, a chat that streamed reasoning).
  - ``"llama-server"``: llama.cpp's own server with its capabilities:
    completions go token-exact through its native ``/completion``
    (``formats/llamacpp/``, chosen in ``openai.py``); chats prefill as
    ``"generic"``, or go through a chat template when the caller gives one.
  - ``"llama-cpp-python"``: as ``"generic"``, but a chunk's tokens are bounded by
    the ``"utf8"`` rule (``resume/accounting.py``): it sends no counts in streams.
  - ``"openai"``: api.openai.com does not continue an assistant message, so
    a stream that broke after output started is not resumed (it fails with
    the cause); failures before the first token are still retried.

* ``/v1/completions``: ``prompt + partial`` (``echo`` is dropped on resume:
  the prompt was already echoed).

``max_tokens`` and ``max_completion_tokens`` shrink by the tokens already
received; every other field (tools, response_format, stop, seed,
stream_options, extra_body...) is carried unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

from ..plan import AttemptPlan, Finished, NotResumable, Progress
from .types import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    CompletionChunk,
    CompletionRequest,
    StreamOptions,
    encode_request,
)

Flavor = Literal[
    "generic", "vllm", "llamacpp", "llama-server", "llama-cpp-python", "ollama", "openai"
]
FLAVORS: frozenset[str] = frozenset(get_args(Flavor))

CHAT_PATH = "/v1/chat/completions"
COMPLETION_PATH = "/v1/completions"

#: Which message field carries partial reasoning in a prefill, per flavor.
_REASONING_FIELD: dict[str, str] = {
    "generic": "reasoning_content",
    "vllm": "reasoning_content",
    "llamacpp": "reasoning_content",
    "llama-server": "reasoning_content",
    "llama-cpp-python": "reasoning_content",
    "ollama": "reasoning",
    "openai": "reasoning_content",
}


class OpenAIPlanner:
    """Plans the first request and every resume of one OpenAI-compatible stream."""

    def __init__(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        *,
        flavor: Flavor = "generic",
        path: str | None = None,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; one of {sorted(FLAVORS)}")
        self.request = _counted(msgspec.structs.replace(request, stream=True), flavor)
        self.flavor = flavor
        # llama-cpp-python 0.3.36 streams the shortest run of tokens that decodes as
        # one chunk (read in its Llama._create_completion): one token per chunk but
        # for multi-byte characters, so the "utf8" bound holds there.
        self._bound = "utf8" if flavor == "llama-cpp-python" else "bytes"
        self.chat = isinstance(request, ChatCompletionRequest)
        self.path = path or (CHAT_PATH if self.chat else COMPLETION_PATH)
        limits = [request.max_tokens]
        if isinstance(request, ChatCompletionRequest):
            limits.append(request.max_completion_tokens)
        known = [n for n in limits if n is not None and n >= 0]
        #: The most tokens the caller asked for (None: no limit).
        self.token_limit: int | None = min(known) if known else None

    @property
    def caller_chunk_type(self) -> type[ChatCompletionChunk] | type[CompletionChunk]:
        return ChatCompletionChunk if self.chat else CompletionChunk

    def initial(self) -> AttemptPlan:
        return AttemptPlan(
            path=self.path,
            body=encode_request(self.request),
            chunk_type=self.caller_chunk_type,
            framing="sse",
            token_limit=self.token_limit,
            token_bound=self._bound,
        )

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        if not progress.started:
            return self.initial()
        req = self.request
        budget = _remaining(req.max_tokens, progress.tokens)
        if budget == 0:
            return Finished("length")
        if isinstance(req, ChatCompletionRequest):
            completion_budget = _remaining(req.max_completion_tokens, progress.tokens)
            if completion_budget == 0:
                return Finished("length")
            if self.flavor == "openai":
                return NotResumable(
                    "api.openai.com does not continue a trailing assistant message, so a "
                    "stream cannot be resumed there (use a server that supports prefill)"
                )
            resumed: ChatCompletionRequest | CompletionRequest = msgspec.structs.replace(
                req,
                messages=self._prefill(req.messages, progress),
                max_tokens=budget,
                max_completion_tokens=completion_budget,
            )
            if self.flavor == "vllm":
                resumed = msgspec.structs.replace(
                    resumed, continue_final_message=True, add_generation_prompt=False
                )
        else:
            resumed = msgspec.structs.replace(
                req, prompt=req.prompt + progress.text, max_tokens=budget, echo=None
            )
        return AttemptPlan(
            path=self.path,
            body=encode_request(resumed),
            chunk_type=self.caller_chunk_type,
            convert=_strip_role if self.chat else None,
            framing="sse",
            token_limit=self.token_limit,
            token_bound=self._bound,
        )

    def _prefill(self, messages: list[ChatMessage], progress: Progress) -> list[ChatMessage]:
        reasoning_field = _REASONING_FIELD[self.flavor]
        if messages and messages[-1].role == "assistant":
            last = messages[-1]
            content: str | list[Any] | None = last.content
            if isinstance(content, list):
                content = [*content, {"type": "text", "text": progress.text}]
            else:
                content = (content or "") + progress.text
            merged = msgspec.structs.replace(last, content=content)
            if progress.thinking:
                before = getattr(last, reasoning_field) or ""
                merged = msgspec.structs.replace(
                    merged, **{reasoning_field: before + progress.thinking}
                )
            return [*messages[:-1], merged]
        prefill = ChatMessage(role="assistant", content=progress.text)
        if progress.thinking:
            prefill = msgspec.structs.replace(prefill, **{reasoning_field: progress.thinking})
        return [*messages, prefill]


def _counted(request: Any, flavor: str) -> Any:
    """Ask the server for its running token count on every chunk where it can give one
    (``resume/accounting.py``): llama-server's ``timings_per_token``, vLLM's
    ``continuous_usage_stats`` (with ``include_usage``). Others count only at the end."""
    if flavor == "llamacpp":
        extra = {"timings_per_token": True, **(request.extra_body or {})}
        return msgspec.structs.replace(request, extra_body=extra)
    if flavor == "vllm":
        opts = request.stream_options or StreamOptions()
        opts = msgspec.structs.replace(opts, include_usage=True, continuous_usage_stats=True)
        return msgspec.structs.replace(request, stream_options=opts)
    return request


def _strip_role(chunk: ChatCompletionChunk) -> ChatCompletionChunk:
    """A resumed attempt opens with ``role`` again: the caller already had it."""
    choices = chunk.choices
    if choices and choices[0].delta.role is not None:
        choice = choices[0]
        delta = msgspec.structs.replace(choice.delta, role=None)
        choices = [msgspec.structs.replace(choice, delta=delta), *choices[1:]]
        return msgspec.structs.replace(chunk, choices=choices)
    return chunk


def _remaining(limit: int | None, tokens: int) -> int | None:
    """The budget left (None: no limit; 0: used up)."""
    if limit is None or limit < 0:
        return limit
    return max(0, limit - tokens)
