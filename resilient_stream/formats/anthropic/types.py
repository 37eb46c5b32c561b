"""Anthropic Messages streaming: the msgspec types of the request and of the events.

Sans-I/O. Field names are Anthropic's, so the events re-encode to what the
``anthropic`` SDK parses. One :class:`Event` type covers every event of a stream
(``message_start``, ``content_block_start``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``, ``ping``, ``error``):
only the fields its ``type`` uses are set, and unset ones are not written back.

:class:`MessageChunk` is what the resume machinery is given: the text-less events
are folded into the delta that follows them (``before``), and ``message_delta`` and
``message_stop`` into one final chunk (``done``), so that one chunk is one token (see
``framing.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Delta(msgspec.Struct, omit_defaults=True, gc=False):
    """A ``content_block_delta``'s delta (``text_delta``, ``thinking_delta``,
    ``signature_delta``, ``input_json_delta``...) or a ``message_delta``'s."""

    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    partial_json: str | None = None
    citation: Any = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class Usage(msgspec.Struct, omit_defaults=True, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: Any = None
    server_tool_use: Any = None
    service_tier: str | None = None


class ErrorInfo(msgspec.Struct, gc=False):
    type: str = "api_error"
    message: str = ""


class Event(msgspec.Struct, omit_defaults=True, gc=False):
    """One SSE event's ``data`` (its ``type`` is also the SSE ``event:`` name)."""

    type: str
    index: int | None = None
    #: ``message_start``: the message (id, model, role, usage...), kept as sent.
    message: dict[str, Any] | None = None
    #: ``content_block_start``: the block (``{"type": "text", "text": ""}``...).
    content_block: dict[str, Any] | None = None
    delta: Delta | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None


class MessageChunk(msgspec.Struct, omit_defaults=True, gc=False):
    """One delta with the text-less events that came before it, or the final chunk.

    Ours, never on the wire as such: ``encoder.py`` writes its events back."""

    #: Text-less events before ``event`` (``message_start``, ``content_block_start``,
    #: ``ping``, ``content_block_stop``).
    before: list[Event] = msgspec.field(default_factory=list)
    #: The ``content_block_delta`` (the final chunk: the ``message_delta``).
    event: Event | None = None
    #: The final chunk (``message_stop`` came; ``event`` is the ``message_delta``).
    done: bool = False


# --- the request -------------------------------------------------------------------


class MessageParam(msgspec.Struct, omit_defaults=True, gc=False, forbid_unknown_fields=True):
    role: str
    #: A string, or a list of content blocks (``{"type": "text", "text": ...}``...).
    content: str | list[Any]


class MessagesRequest(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    model: str
    messages: list[MessageParam]
    max_tokens: int
    stream: bool | None = None
    system: str | list[Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: Any = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    thinking: Any = None
    service_tier: str | None = None
    #: Any other field the caller sent (``container``, ``mcp_servers``...), sent as is.
    extra_body: dict[str, Any] | None = None


_encoder = msgspec.json.Encoder()


def encode_request(request: MessagesRequest) -> bytes:
    """The JSON body: the typed fields, with ``extra_body`` merged in at the top level."""
    extra = request.extra_body
    if not extra:
        return _encoder.encode(request)
    fields = msgspec.to_builtins(msgspec.structs.replace(request, extra_body=None))
    fields.update(extra)
    return _encoder.encode(fields)
