"""msgspec Structs for Ollama's ``/api/generate`` and ``/api/chat`` wire format.

Field names are Ollama's, so code written against Ollama reads our chunks
unchanged: as attributes, and like ollama-python's models as ``chunk["key"]``,
``"key" in chunk`` (the field is set: not ``None``) and ``chunk.get(key)``.
Unknown fields are ignored (servers add fields over time). All Structs are
``gc=False``: they hold no reference cycles, and skipping the garbage
collector's bookkeeping is measurable on a token stream.

The one declaration of the schema: the client decodes into these, the
ollama drop-in hands them out when the ``ollama`` package is not installed,
and the reference server answers with them (through ``encoder.py``). The same
types encode requests and decode responses; ``omit_defaults`` keeps what we
send minimal.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Subscriptable:
    """``obj["key"]`` / ``in`` / ``get`` over a Struct's fields, like ollama-python's
    models (``"key" in obj``: the field is set, i.e. not ``None``)."""

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


class ToolCallFunction(Subscriptable, msgspec.Struct, omit_defaults=True, gc=False):
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    index: int | None = None


class ToolCall(Subscriptable, msgspec.Struct, omit_defaults=True, gc=False):
    function: ToolCallFunction
    id: str | None = None
    type: str | None = None


class Message(Subscriptable, msgspec.Struct, omit_defaults=True, gc=False):
    """A chat message, as sent in ``messages`` and received in chat chunks."""

    role: str = ""
    """Always sent when set; chunks from Ollama carry "assistant"."""
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None
    images: list[str] | None = None
    tool_name: str | None = None


class TopLogprob(Subscriptable, msgspec.Struct, omit_defaults=True, gc=False):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(Subscriptable, msgspec.Struct, omit_defaults=True, gc=False):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] | None = None


class _Metrics(Subscriptable, msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    """Fields of the final (``done: true``) chunk, shared by generate and chat."""

    model: str = ""
    created_at: str = ""
    done: bool = False
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[Logprob] | None = None
    #: Set only on an ``{"error": "..."}`` line; the decoder turns it into
    #: :class:`~resilient_stream.errors.ServerReportedError`, users never see it.
    error: str | None = None


class GenerateChunk(_Metrics, kw_only=True):
    """One NDJSON line of ``/api/generate``."""

    response: str = ""
    thinking: str | None = None
    context: list[int] | None = None


class ChatChunk(_Metrics, kw_only=True):
    """One NDJSON line of ``/api/chat``."""

    message: Message = msgspec.field(default_factory=Message)


Chunk = GenerateChunk | ChatChunk


# --- requests ------------------------------------------------------------------


class GenerateRequest(
    msgspec.Struct, omit_defaults=True, kw_only=True, forbid_unknown_fields=True, gc=False
):
    """Body of ``POST /api/generate``."""

    model: str
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None
    raw: bool | None = None
    format: Any = None
    think: bool | str | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stream: bool = True


class ChatRequest(
    msgspec.Struct, omit_defaults=True, kw_only=True, forbid_unknown_fields=True, gc=False
):
    """Body of ``POST /api/chat``."""

    model: str
    messages: list[Message] = msgspec.field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: Any = None
    think: bool | str | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stream: bool = True
