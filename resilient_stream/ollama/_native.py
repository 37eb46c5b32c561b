"""Lightweight stand-ins for ollama-python's response and error types.

Used when the ``ollama`` package is not installed. They read like
ollama's pydantic models: attribute access, ``obj["key"]``, ``"key" in obj``
(true when the field is set, i.e. not ``None``) and ``obj.get(key, default)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec


class Subscriptable:
    """``obj["key"]`` / ``in`` / ``get`` over a Struct's fields, like ollama's models."""

    __slots__ = ()
    __struct_fields__: tuple[str, ...]

    def __getitem__(self, key: str) -> Any:
        if key in self.__struct_fields__:
            return getattr(self, key)
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.__struct_fields__:
            raise KeyError(key)
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in self.__struct_fields__ and getattr(self, key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__struct_fields__ else default


class ToolCallFunction(Subscriptable, msgspec.Struct, omit_defaults=True):
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class ToolCall(Subscriptable, msgspec.Struct, omit_defaults=True):
    function: ToolCallFunction


class Message(Subscriptable, msgspec.Struct, omit_defaults=True, kw_only=True):
    role: str
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_name: str | None = None
    tool_calls: list[ToolCall] | None = None


class TokenLogprob(Subscriptable, msgspec.Struct, omit_defaults=True):
    token: str
    logprob: float


class Logprob(Subscriptable, msgspec.Struct, omit_defaults=True, kw_only=True):
    token: str
    logprob: float
    top_logprobs: list[TokenLogprob] | None = None


class _BaseResponse(Subscriptable, msgspec.Struct, omit_defaults=True, kw_only=True):
    model: str | None = None
    created_at: str | None = None
    done: bool | None = None
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateResponse(_BaseResponse, kw_only=True):
    response: str | None = None
    thinking: str | None = None
    context: Sequence[int] | None = None
    logprobs: list[Logprob] | None = None


class ChatResponse(_BaseResponse, kw_only=True):
    message: Message
    logprobs: list[Logprob] | None = None


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
