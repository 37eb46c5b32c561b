"""What stands in for ollama-python's types when the ``ollama`` package is not installed.

The responses are the wire chunks themselves (one declaration of Ollama's
schema: :mod:`resilient_stream.formats.ollama.types`). They read like ollama's
pydantic models: attribute access, ``obj["key"]``, ``"key" in obj`` (true when
the field is set, i.e. not ``None``) and ``obj.get(key, default)``. The errors
are look-alikes of ollama's.
"""

from __future__ import annotations

import json

from ..formats.ollama.types import ChatChunk as ChatResponse
from ..formats.ollama.types import GenerateChunk as GenerateResponse
from ..formats.ollama.types import Message

__all__ = ["ChatResponse", "GenerateResponse", "Message", "RequestError", "ResponseError"]


class RequestError(Exception):
    """A request that cannot be sent (like ``ollama.RequestError``)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class ResponseError(Exception):
    """The server answered with an error (like ``ollama.ResponseError``).

    ``status_code`` is the HTTP status, or -1 for an error reported inside a stream.
    """

    def __init__(self, error: str, status_code: int = -1) -> None:
        try:
            decoded = json.loads(error)
        except (ValueError, TypeError):
            decoded = None
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            error = decoded["error"]
        super().__init__(error)
        self.error = error
        self.status_code = status_code

    def __str__(self) -> str:
        return f"{self.error} (status code: {self.status_code})"
