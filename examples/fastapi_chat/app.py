"""A FastAPI streaming chat endpoint on top of resilient-stream.

Run it (Ollama, or the reference server: `resilient-stream serve --port 11434`)::

    pip install resilient-stream fastapi uvicorn
    OLLAMA_HOST=http://127.0.0.1:11434 uvicorn app:app --port 8000
    curl -N localhost:8000/api/chat -d '{"model": "qwen3:1.7b",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]}'

What it shows (the pains of a typical FastAPI + httpx proxy):

- ONE StreamClient for the whole app, created in the lifespan and closed at
  shutdown: every request multiplexes over its pooled HTTP/2 connections
  (or HTTP/1.1 to a bare Ollama), nothing is created per request.
- The browser gets Ollama's own NDJSON lines (`application/x-ndjson`), so
  front-end code written for Ollama works unchanged; interruptions between
  us and the model server are resumed and never reach the browser.
- When the browser goes away, the upstream stream is cancelled at once
  (HTTP/2 RST_STREAM, or closing the HTTP/1.1 connection): the model stops
  generating tokens nobody will read.
- A cap on concurrent streams answers 503 + Retry-After instead of piling
  every user onto the model server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from resilient_stream import ChatChunk, StreamClient, StreamConfig, StreamError

_encoder = msgspec.json.Encoder()


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatBody(BaseModel):
    model: str
    messages: list[ChatMessage]
    options: dict[str, Any] | None = None
    think: bool | None = None
    keep_alive: str | int | None = None


class UpstreamStreamingResponse(StreamingResponse):
    """Closes its body iterator however the response ends (finished, browser gone,
    server error), so the upstream stream is cancelled now, not whenever the
    garbage collector gets to an abandoned async generator."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


def create_app(
    upstream: str | Sequence[str] | None = None,
    *,
    config: StreamConfig | None = None,
    max_streams: int = 256,
) -> FastAPI:
    """The app; ``upstream`` is the model server URL (or replicas), default $OLLAMA_HOST."""
    url = upstream or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with StreamClient(url, config=config) as client:
            app.state.client = client
            app.state.slots = asyncio.Semaphore(max_streams)
            yield  # shutdown: cancels open streams, closes connections

    app = FastAPI(title="resilient-stream chat", lifespan=lifespan)

    @app.post("/api/chat")
    async def chat(body: ChatBody) -> StreamingResponse:
        slots: asyncio.Semaphore = app.state.slots
        if slots.locked():
            raise HTTPException(503, "too many streams in flight", headers={"Retry-After": "1"})
        return UpstreamStreamingResponse(
            _ndjson(app.state.client, slots, body), media_type="application/x-ndjson"
        )

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return _PAGE

    return app


async def _ndjson(
    client: StreamClient, slots: asyncio.Semaphore, body: ChatBody
) -> AsyncIterator[bytes]:
    """Ollama's NDJSON lines for one chat; the stream opens on the first read and
    ``async with`` cancels it upstream when this generator is closed or cancelled."""
    fields = body.model_dump(exclude_none=True, exclude={"model", "messages"})
    messages = [m.model_dump() for m in body.messages]
    async with slots:
        stream = client.chat(model=body.model, messages=messages, **fields)
        async with stream:
            try:
                async for chunk in stream:
                    yield _ollama_line(chunk)
            except StreamError as exc:
                # Headers are gone already: report like Ollama does, as a final error line.
                yield _encoder.encode({"error": str(exc)}) + b"\n"


def _ollama_line(chunk: ChatChunk) -> bytes:
    """One NDJSON line exactly as Ollama writes it: ``done`` and ``message.content`` are
    always present (our Structs omit default values on the wire)."""
    line = msgspec.to_builtins(chunk)
    line["done"] = chunk.done
    message = line.setdefault("message", {})
    message.setdefault("role", "assistant")
    message.setdefault("content", "")
    return _encoder.encode(line) + b"\n"


_PAGE = """<!doctype html><meta charset="utf-8"><title>chat</title>
<form id="f"><input id="q" size="60" value="Why is the sky blue?">
<input id="m" value="qwen3:1.7b"><button>Send</button>
<button type="button" id="stop">Stop</button></form><pre id="out"></pre>
<script>
let ctrl;
document.getElementById("stop").onclick = () => ctrl && ctrl.abort();
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault(); ctrl = new AbortController();
  const out = document.getElementById("out"); out.textContent = "";
  const res = await fetch("/api/chat", {method: "POST", signal: ctrl.signal,
    headers: {"content-type": "application/json"},
    body: JSON.stringify({model: m.value, messages: [{role: "user", content: q.value}]})});
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read(); if (done) break;
    buf += value; const lines = buf.split("\\n"); buf = lines.pop();
    for (const l of lines) { const c = JSON.parse(l);
      out.textContent += c.error ? "\\n[error] " + c.error : c.message.content; }
  }
};
</script>"""

app = create_app()
