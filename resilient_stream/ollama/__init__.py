"""A drop-in for the official ``ollama`` client's ``AsyncClient``, with resume.

Change one import::

    from resilient_stream.ollama import AsyncClient   # was: from ollama import AsyncClient

    client = AsyncClient(host="http://127.0.0.1:11434")
    async for part in await client.chat(model="qwen3", messages=msgs, stream=True):
        print(part["message"]["content"], end="", flush=True)

``generate()`` and ``chat()`` take ollama-python's arguments and return its
shapes: one response, or with ``stream=True`` an async iterator of responses.
With the ``ollama`` package installed, the responses *are* ollama's own
``GenerateResponse``/``ChatResponse`` and errors are ``ollama.ResponseError``
(``status_code``, ``error``); without it, look-alikes with the same fields,
attribute and ``["key"]`` access (see ``USING_OLLAMA_TYPES``).

A bare Ollama speaks HTTP/1.1 only: the transport detects that on the first
request and falls back by itself; set ``RESILIENT_STREAM_HTTP2=0`` (or pass
``config=StreamConfig(http2=False)``) to skip the h2c probe. See docs/ollama.md.
"""

from ._responses import (
    USING_OLLAMA_TYPES,
    ChatResponse,
    GenerateResponse,
    Message,
    RequestError,
    ResponseError,
)
from .client import AsyncClient, ResponseStream

__all__ = [
    "USING_OLLAMA_TYPES",
    "AsyncClient",
    "ChatResponse",
    "GenerateResponse",
    "Message",
    "RequestError",
    "ResponseError",
    "ResponseStream",
]
