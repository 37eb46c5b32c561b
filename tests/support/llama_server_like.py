"""A small llama-server-like endpoint for the default test tier (real sockets, no model).

It behaves like llama.cpp's server where resume cares (read from the vendored
sources, see resilient_stream/formats/llamacpp/types.py), with a toy model
whose next token is a pure function of the context's token *ids*, so that
re-tokenizing text at a seam changes the continuation exactly as on a real
model:

* tokenizer: ids 0-255 are bytes; ``NEWLINES`` (256) is ``"\\n\\n"`` and
  ``E_ACUTE`` (257) is ``"é"``, merged greedily, so generated ``10, 10`` or
  ``0xC3, 0xA9`` re-tokenize differently; ``BOS`` (300) is added to a string
  prompt (the first element of a mixed prompt only), ``EOS`` (301) ends;
* ``POST /completion``: native stream (``content``, ``tokens`` with
  ``return_tokens``, ``tokens_predicted``, ``stop``/``stop_type``; events of an
  incomplete UTF-8 character are held back and the completing event carries
  only the last id); prompts as a string, ids, or a mixed array;
* ``POST /v1/completions``: the OpenAI stream of the same generation (text only);
* ``POST /v1/chat/completions``: renders the messages with :func:`render` and,
  like llama-cpp-python, closes a trailing assistant message (a new answer);
* ``GET /props``: ``build_info`` and the ``chat_template``.

``cuts[i]``: the i-th generation request is closed after that many events.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .scripted_server import Reply, Request, ScriptedServer

NEWLINES, E_ACUTE, BOS, EOS = 256, 257, 300, 301
_MERGES = {NEWLINES: b"\n\n", E_ACUTE: "é".encode()}
_LETTERS = [ord(c) for c in "abcdefghij"]

#: The chat template /props publishes (Jinja) and :func:`render` implements.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def render(messages: list[dict[str, Any]], close_last: bool = True) -> str:
    out = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    return out + "<|assistant|>"


def tokenize(text: str, *, bos: bool) -> list[int]:
    data = text.encode()
    ids = [BOS] if bos else []
    i = 0
    while i < len(data):
        for tok, piece in _MERGES.items():
            if data.startswith(piece, i):
                ids.append(tok)
                i += len(piece)
                break
        else:
            ids.append(data[i])
            i += 1
    return ids


def token_bytes(tok: int) -> bytes:
    if tok in _MERGES:
        return _MERGES[tok]
    return bytes([tok]) if tok < 256 else b""


def prompt_ids(prompt: Any) -> list[int]:
    """llama-server's tokenize_mixed: a string (BOS added), ids, or a mixed array."""
    if isinstance(prompt, str):
        return tokenize(prompt, bos=True)
    ids: list[int] = []
    for i, element in enumerate(prompt):
        if isinstance(element, str):
            ids += tokenize(element, bos=i == 0)
        else:
            ids.append(int(element))
    return ids


@dataclass
class ToyModel:
    """Next token = hash of the context ids; ``multibyte``/``newlines`` add the
    tokens whose re-tokenization differs."""

    multibyte: bool = True
    newlines: bool = True
    eos_after: int = 10_000

    def next(self, context: list[int], generated: int) -> int:
        last = context[-1] if context else -1
        if last == 0xC3:
            return 0xA9  # finish "é" (two byte tokens; re-tokenized it is E_ACUTE)
        if last in (0xF0, 0x9F) or (last == 0x98 and context[-2:-1] == [0x9F]):
            return {0xF0: 0x9F, 0x9F: 0x98, 0x98: 0x80}[last]  # 😀 as four byte tokens
        if generated >= self.eos_after:
            return EOS
        h = int.from_bytes(hashlib.sha256(repr(context).encode()).digest()[:4], "big")
        if last == 10 and self.newlines and h % 2:
            return 10
        choices = [*_LETTERS, 32, 32]
        if self.newlines:
            choices.append(10)
        if self.multibyte:
            choices += [0xC3, 0xF0]
        return choices[h % len(choices)]


@dataclass
class LlamaServerLike:
    model: ToyModel = field(default_factory=ToyModel)
    cuts: list[int] = field(default_factory=list)
    #: Every generation request's JSON body, in order.
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    #: Tokens generated per generation request.
    generated: list[int] = field(default_factory=list)
    server: ScriptedServer | None = None

    async def __aenter__(self) -> LlamaServerLike:
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

    def generate(self, context: list[int], n_predict: int) -> tuple[list[int], str]:
        """The ids an unbroken request would stream, and why it stops."""
        ids: list[int] = []
        ctx = list(context)
        while n_predict < 0 or len(ids) < n_predict:
            tok = self.model.next(ctx, len(ids))
            if tok == EOS:
                return ids, "eos"
            ids.append(tok)
            ctx.append(tok)
        return ids, "limit"

    async def handle(self, request: Request, reply: Reply) -> None:
        if request.method == "GET" and request.path == "/props":
            props = {
                "build_info": "b0-fake",
                "chat_template": CHAT_TEMPLATE,
                "default_generation_settings": {},
                "bos_token": "",
                "eos_token": "",
            }
            await reply.respond(200, json.dumps(props).encode())
            return
        if request.method != "POST":
            await reply.respond(404, b'{"error": {"message": "not found"}}')
            return
        body = json.loads(request.body)
        if request.path == "/completion":
            context = prompt_ids(body["prompt"])
            n_predict = int(body.get("n_predict", -1))
        elif request.path == "/v1/completions":
            context = prompt_ids(body["prompt"])
            n_predict = int(body.get("max_tokens", -1))
        elif request.path == "/v1/chat/completions":
            msgs = body["messages"]
            context = prompt_ids(render(msgs))  # a trailing assistant turn is closed
            n_predict = int(body.get("max_tokens", -1))
        else:
            await reply.respond(404, b'{"error": {"message": "not found"}}')
            return
        index = len(self.bodies)
        self.bodies.append(body)
        self.paths.append(request.path)
        ids, stop = self.generate(context, n_predict)
        self.generated.append(len(ids))
        cut = self.cuts[index] if index < len(self.cuts) else None
        await reply.start(200, {"content-type": "text/event-stream"})
        events = self._events(request.path, ids, stop, len(context), body)
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                reply.drop()
                return
            await reply.send(b"data: " + json.dumps(event).encode() + b"\n\n")
        if request.path != "/completion":
            await reply.send(b"data: [DONE]\n\n")
        await reply.end()

    def _events(
        self, path: str, ids: list[int], stop: str, n_prompt: int, body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        pending = b""
        for n, tok in enumerate(ids, 1):
            pending += token_bytes(tok)
            try:
                text = pending.decode()
            except UnicodeDecodeError:
                continue  # an incomplete character: held back, its ids are never sent
            pending = b""
            if path == "/completion":
                event: dict[str, Any] = {
                    "content": text,
                    "stop": False,
                    "tokens_predicted": n,
                    "tokens_evaluated": n_prompt,
                }
                if body.get("return_tokens"):
                    event["tokens"] = [tok]
            elif path == "/v1/completions":
                event = {"choices": [{"text": text, "index": 0, "finish_reason": None}]}
            else:
                event = {
                    "choices": [{"delta": {"content": text}, "index": 0, "finish_reason": None}]
                }
            events.append(event)
        finish = "length" if stop == "limit" else "stop"
        if path == "/completion":
            events.append(
                {
                    "content": "",
                    "tokens": [],
                    "stop": True,
                    "stop_type": stop,
                    "tokens_predicted": len(ids),
                    "tokens_evaluated": n_prompt,
                }
            )
        elif path == "/v1/completions":
            events.append({"choices": [{"text": "", "index": 0, "finish_reason": finish}]})
        else:
            events.append({"choices": [{"delta": {}, "index": 0, "finish_reason": finish}]})
        return events
