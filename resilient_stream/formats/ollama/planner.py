"""Resume planning for Ollama's API (sans-I/O).

Given the user's original request and what has been received so far, the
planner builds the request of the next attempt:

* ``/api/chat``: the messages plus a trailing assistant message holding the
  partial ``content`` and ``thinking`` (Ollama continues it: "prefill"). If the
  caller's last message already was an assistant prefill, it is extended.
* ``/api/generate`` with ``raw``: ``prompt + partial`` with ``raw: true``.
* ``/api/generate`` without ``raw``: Ollama renders the prompt as one user
  turn, so the resume goes through ``/api/chat`` with
  ``[system?, user: prompt, assistant: partial]`` and its chunks are mapped
  back to generate chunks; the caller never sees the switch.

``options.num_predict`` shrinks by the tokens the carried text took (the
server's count, or an upper bound: ``resume/accounting.py``), so the whole
stream never exceeds what was asked. Images, tools, format, think,
keep_alive and every other option are carried over unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..plan import AttemptPlan, Finished, NotResumable, Progress
from .types import ChatChunk, ChatRequest, GenerateChunk, GenerateRequest, Message

Endpoint = Literal["generate", "chat"]

_encode = msgspec.json.Encoder().encode


class ResumePlanner:
    """Plans the first request and every resume of one logical Ollama stream."""

    def __init__(self, request: GenerateRequest | ChatRequest) -> None:
        self.request = request
        self.endpoint: Endpoint = "chat" if isinstance(request, ChatRequest) else "generate"
        self._num_predict = _num_predict(request.options)
        n = self._num_predict
        self.token_limit: int | None = n if n is not None and n >= 0 else None

    @property
    def caller_chunk_type(self) -> type[GenerateChunk] | type[ChatChunk]:
        return ChatChunk if self.endpoint == "chat" else GenerateChunk

    def initial(self) -> AttemptPlan:
        return AttemptPlan(
            path=f"/api/{self.endpoint}",
            body=_encode(self.request),
            chunk_type=self.caller_chunk_type,
            token_limit=self.token_limit,
        )

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        """The request that continues after ``progress`` (or restarts if nothing came)."""
        if not progress.started:
            return self.initial()
        options = self._remaining_options(progress.tokens)
        if options is None:
            return Finished()
        req = self.request
        if isinstance(req, ChatRequest):
            return AttemptPlan(
                "/api/chat",
                _encode(
                    msgspec.structs.replace(
                        req, messages=_prefill(req.messages, progress), options=options
                    )
                ),
                ChatChunk,
                token_limit=self.token_limit,
            )
        if req.template is not None or req.suffix is not None or req.context is not None:
            return NotResumable(
                "generate requests with `template`, `suffix` or `context` cannot be continued "
                "by re-prompting; drop those fields or use /api/chat to get resume"
            )
        if req.raw:
            return AttemptPlan(
                "/api/generate",
                _encode(
                    msgspec.structs.replace(req, prompt=req.prompt + progress.text, options=options)
                ),
                GenerateChunk,
                token_limit=self.token_limit,
            )
        messages = []
        if req.system is not None:
            messages.append(Message(role="system", content=req.system))
        messages.append(Message(role="user", content=req.prompt, images=req.images))
        chat = ChatRequest(
            model=req.model,
            messages=_prefill(messages, progress),
            format=req.format,
            think=req.think,
            options=options,
            keep_alive=req.keep_alive,
            logprobs=req.logprobs,
            top_logprobs=req.top_logprobs,
        )
        return AttemptPlan(
            "/api/chat",
            _encode(chat),
            ChatChunk,
            convert=chat_to_generate,
            token_limit=self.token_limit,
        )

    def _remaining_options(self, tokens: int) -> dict[str, Any] | None:
        options = dict(self.request.options or {})
        if self._num_predict is not None and self._num_predict >= 0:
            remaining = self._num_predict - tokens
            if remaining <= 0:
                return None
            options["num_predict"] = remaining
        return options


def _num_predict(options: dict[str, Any] | None) -> int | None:
    if not options or "num_predict" not in options:
        return None
    value = options["num_predict"]
    return value if isinstance(value, int) else None


def _prefill(messages: list[Message], progress: Progress) -> list[Message]:
    """Messages ending in an assistant turn that holds the partial output."""
    if messages and messages[-1].role == "assistant":
        last = messages[-1]
        merged = msgspec.structs.replace(
            last,
            content=last.content + progress.text,
            thinking=((last.thinking or "") + progress.thinking) or None,
        )
        return [*messages[:-1], merged]
    return [
        *messages,
        Message(role="assistant", content=progress.text, thinking=progress.thinking or None),
    ]


def chat_to_generate(chunk: ChatChunk) -> GenerateChunk:
    """Map a chat chunk of a resumed non-raw generate back to a generate chunk."""
    msg = chunk.message
    return GenerateChunk(
        model=chunk.model,
        created_at=chunk.created_at,
        response=msg.content,
        thinking=msg.thinking,
        done=chunk.done,
        done_reason=chunk.done_reason,
        total_duration=chunk.total_duration,
        load_duration=chunk.load_duration,
        prompt_eval_count=chunk.prompt_eval_count,
        prompt_eval_duration=chunk.prompt_eval_duration,
        eval_count=chunk.eval_count,
        eval_duration=chunk.eval_duration,
        logprobs=chunk.logprobs,
    )
