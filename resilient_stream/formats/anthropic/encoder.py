"""Anthropic chunks back into SSE events (sans-I/O): the inverse of ``framing.py``.

Each event is written as Anthropic writes it, an ``event:`` line naming its type
and one ``data:`` line; a final chunk (``done``) ends with ``message_stop``. So
``decode(encode_chunk(c)) == [c]`` for the chunks the decoder makes.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .types import ErrorInfo, Event, MessageChunk

_enc = msgspec.json.Encoder().encode

#: The event that ends a stream.
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def encode_event(event: Event) -> bytes:
    """One event, ``event:`` and ``data:`` lines and the blank line that ends it."""
    return b"event: " + event.type.encode() + b"\ndata: " + _enc(event) + b"\n\n"


def encode_chunk(chunk: MessageChunk) -> bytes:
    """The events a chunk stands for, in order."""
    out = [encode_event(ev) for ev in chunk.before]
    if chunk.event is not None:
        out.append(encode_event(chunk.event))
    if chunk.done:
        out.append(MESSAGE_STOP)
    return b"".join(out)


def encode_chunks(chunks: Iterable[MessageChunk]) -> bytes:
    return b"".join(map(encode_chunk, chunks))


def encode_error(error: ErrorInfo) -> bytes:
    """Anthropic's error object: a whole error body, or the ``data`` of an error event."""
    return b'{"type":"error","error":' + _enc(error) + b"}"


def error_event(error: ErrorInfo) -> bytes:
    return b"event: error\ndata: " + encode_error(error) + b"\n\n"


def text_affixes(index: int = 0, *, thinking: bool = False) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` such that ``prefix + json(text) + suffix`` is the
    ``content_block_delta`` event of a ``text_delta`` (``thinking_delta``), byte for
    byte what :func:`encode_event` makes of it; for a server that streams many."""
    kind, field = (b"thinking_delta", b"thinking") if thinking else (b"text_delta", b"text")
    head = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
        + str(index).encode()
        + b',"delta":{"type":"'
        + kind
        + b'","'
        + field
        + b'":'
    )
    return head, b"}}\n\n"
