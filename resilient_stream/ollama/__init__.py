"""The official ``ollama`` client with resume underneath: change one import.

    from resilient_stream.ollama import AsyncClient   # was: from ollama import AsyncClient

    client = AsyncClient(host="http://127.0.0.1:11434")
    async for part in await client.chat(model="qwen3", messages=msgs, stream=True):
        print(part["message"]["content"], end="", flush=True)

``AsyncClient`` and ``Client`` are subclasses of ollama's whose httpx client runs on
:class:`~resilient_stream.sdk.ResilientTransport` (``ResilientSyncTransport``): the
methods, request bodies, response types and errors are ollama's own; a stream that
breaks mid-answer is resumed below them. ``from resilient_stream import ollama`` works
for code that does ``import ollama``: the module functions (``chat``, ``generate``,
...) are bound to a default drop-in ``Client``, made on first use, and every other
name (``ResponseError``, ``Message``, ``Options``...) is ollama's.

Needs the ``ollama`` package (``pip install ollama``); without it, taking a name from
here raises an ImportError that says so. See docs/ollama.md.
"""

from __future__ import annotations

import threading
from importlib.util import find_spec
from typing import Any

_MISSING = (
    "resilient_stream.ollama is the official ollama client with resume underneath: "
    "it needs the `ollama` package (pip install ollama). Without it, use "
    "resilient_stream.StreamClient."
)

__all__ = ["AsyncClient", "Client"]

if find_spec("ollama") is not None:
    import ollama as _upstream

    from .client import AsyncClient, Client

_lock = threading.Lock()
_default: list[Client] = []


def _default_client() -> Client:
    """ollama's module functions run on ``ollama._client``: ours on a drop-in Client,
    made when one is first used (not at import: it starts the transport's loop thread)."""
    with _lock:
        if not _default:
            _default.append(Client())
        return _default[0]


def __getattr__(name: str) -> Any:
    """ollama's other names from here; its module functions on the default drop-in."""
    if name.startswith("__"):
        raise AttributeError(name)
    if find_spec("ollama") is None:
        raise ImportError(_MISSING, name=__name__)
    value = getattr(_upstream, name)
    if getattr(value, "__self__", None) is getattr(_upstream, "_client", None):
        return getattr(_default_client(), name)  # ollama.chat is ollama._client.chat
    return value
