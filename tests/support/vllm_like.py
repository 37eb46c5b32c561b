"""A small vLLM-like OpenAI server for the default test tier (real sockets, no model).

It streams the way vLLM's serving code does where resume cares (see
resilient_stream/formats/vllm/types.py), with the token-level toy model of
``llama_server_like.py`` (next token = hash of the context's *ids*; ``"\\n","\\n"``
re-tokenizes as ``"\\n\\n"`` and ``"é"`` as one token), so a resume that sends text
back diverges at the seam where one that sends ids does not:

* ``POST /v1/completions``: ``prompt`` a string (tokenized with BOS) or a list of
  ids (taken as is); with ``return_token_ids``: ``prompt_token_ids`` on the first
  chunk, ``token_ids`` (this step's id) on every chunk; a step that ends inside a
  UTF-8 character streams ``text: ""`` with its id; the EOS id comes with the
  finish chunk; ``stream_options``: a usage chunk at the end, and per chunk with
  ``continuous_usage_stats``;
* ``POST /v1/chat/completions``: renders the messages (``render``); with
  ``continue_final_message`` a trailing assistant message is continued as text
  (re-tokenized); the first chunk is the role with ``prompt_token_ids`` at the top;
* ``ids=False``: a vLLM from before ``return_token_ids``: the field is ignored.

``cuts[i]``: the i-th generation request is closed after that many events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .llama_server_like import BOS, EOS, ToyModel, token_bytes, tokenize
from .scripted_server import Reply, Request, ScriptedServer

__all__ = ["BOS", "EOS", "ToyModel", "VllmLike", "decode", "render", "tokens_of"]


def render(messages: list[dict[str, Any]], *, continue_final: bool = False) -> str:
    """The toy chat template; ``continue_final``: leave a trailing assistant turn open."""
    if continue_final and messages and messages[-1]["role"] == "assistant":
        head = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages[:-1])
        return head + "<|assistant|>" + str(messages[-1]["content"])
    return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"


def tokens_of(prompt: Any) -> list[int]:
    """vLLM's prompt: a string (tokenized, BOS added) or a list of ids (as is)."""
    if isinstance(prompt, str):
        return tokenize(prompt, bos=True)
    return [int(t) for t in prompt]


def decode(ids: list[int]) -> str:
    return b"".join(token_bytes(t) for t in ids).decode()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class VllmLike:
    model: ToyModel = field(default_factory=ToyModel)
    cuts: list[int] = field(default_factory=list)
    #: False: a vLLM without return_token_ids (the field is accepted and ignored).
    ids: bool = True
    #: EOS once the context (prompt + output) has this many ids: a pure function of the
    #: context, so a resumed request stops where the unbroken one does (ToyModel's
    #: ``eos_after`` counts per request).
    eos_at: int | None = None
    #: Every generation request's JSON body and path, in order.
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    #: Tokens generated per generation request (the EOS token included, as vLLM counts).
    generated: list[int] = field(default_factory=list)
    server: ScriptedServer | None = None

    async def __aenter__(self) -> VllmLike:
        self.server = ScriptedServer(self.handle)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        await self.server.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def generate(self, context: list[int], max_tokens: int) -> tuple[list[int], str]:
        """The ids an unbroken request streams (EOS included) and its finish reason."""
        ids: list[int] = []
        ctx = list(context)
        while max_tokens < 0 or len(ids) < max_tokens:
            tok = self.model.next(ctx, len(ids))
            if self.eos_at is not None and len(ctx) >= self.eos_at:
                tok = EOS
            ids.append(tok)
            if tok == EOS:
                return ids, "stop"
            ctx.append(tok)
        return ids, "length"

    def text_of(self, prompt: Any, max_tokens: int) -> str:
        """The text an unbroken run streams for ``prompt`` (a string or ids)."""
        ids, _ = self.generate(tokens_of(prompt), max_tokens)
        return decode([t for t in ids if t != EOS])

    async def handle(self, request: Request, reply: Reply) -> None:
        if request.method != "POST" or request.path not in (
            "/v1/completions",
            "/v1/chat/completions",
        ):
            await reply.respond(404, b'{"error": {"message": "not found"}}')
            return
        body = json.loads(request.body)
        chat = request.path == "/v1/chat/completions"
        if chat:
            context = tokens_of(
                render(body["messages"], continue_final=bool(body.get("continue_final_message")))
            )
        else:
            context = tokens_of(body["prompt"])
        index = len(self.bodies)
        self.bodies.append(body)
        self.paths.append(request.path)
        ids, finish = self.generate(context, int(body.get("max_tokens", -1)))
        self.generated.append(len(ids))
        cut = self.cuts[index] if index < len(self.cuts) else None
        await reply.start(200, {"content-type": "text/event-stream"})
        for i, event in enumerate(self._events(chat, context, ids, finish, body)):
            if cut is not None and i >= cut:
                reply.drop()
                return
            await reply.send(b"data: " + _dumps(event) + b"\n\n")
        await reply.send(b"data: [DONE]\n\n")
        await reply.end()

    def _events(
        self, chat: bool, context: list[int], ids: list[int], finish: str, body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        with_ids = self.ids and bool(body.get("return_token_ids"))
        opts = body.get("stream_options") or {}
        continuous = bool(opts.get("include_usage") and opts.get("continuous_usage_stats"))
        head: dict[str, Any] = {
            "id": "chatcmpl-1" if chat else "cmpl-1",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1,
            "model": body["model"],
        }
        events: list[dict[str, Any]] = []

        def usage(n: int) -> dict[str, int]:
            return {
                "prompt_tokens": len(context),
                "completion_tokens": n,
                "total_tokens": len(context) + n,
            }

        if chat:
            first: dict[str, Any] = {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }
            if with_ids:
                first["prompt_token_ids"] = context
            if continuous:
                first["usage"] = usage(0)
            events.append(first)
        pending = b""
        for n, tok in enumerate(ids, 1):
            pending += token_bytes(tok)
            try:
                text = pending.decode()
            except UnicodeDecodeError:
                text = ""  # vLLM's detokenizer holds the incomplete character back
            else:
                pending = b""
            reason = finish if n == len(ids) else None
            choice: dict[str, Any]
            if chat:
                choice = {"index": 0, "delta": {"content": text}, "logprobs": None}
            else:
                choice = {"index": 0, "text": text, "logprobs": None}
            choice["finish_reason"] = reason
            if with_ids:
                choice["token_ids"] = [tok]
                if not chat and n == 1:
                    choice["prompt_token_ids"] = context
            event = {**head, "choices": [choice]}
            if continuous:
                event["usage"] = usage(n)
            events.append(event)
        if opts.get("include_usage"):
            events.append({**head, "choices": [], "usage": usage(len(ids))})
        return events
