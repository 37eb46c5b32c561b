"""Anthropic Messages streaming: the SSE record framer and the chunk decoder (sans-I/O).

The resume machinery counts one token per chunk it is given, so events that carry
no text must not reach it as chunks of their own. As for OpenAI streams
(``formats/openai/framing.py``):

* :class:`AnthropicFramer` (one per attempt) holds the records of text-less events
  (``message_start``, ``content_block_start``, ``ping``, ``content_block_stop``,
  ``message_delta``) until a ``content_block_delta``, an ``error`` or
  ``message_stop`` arrives, and hands them over in the same batch. The ``data`` of
  each event names its type, so the ``event:`` line is not needed. A wrong guess only
  delays a record, never loses one.
* :class:`AnthropicDecoder` (stateless) folds the held events into the next delta
  (``MessageChunk.before``) and ``message_delta`` + ``message_stop`` into **one final
  chunk** (``done``).

A body that ends without ``message_stop`` is a truncation and is resumed. An
``error`` event raises :class:`ServerReportedError` (``overloaded_error``,
``api_error``: retryable; ``invalid_request_error``...: permanent).
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import ServerReportedError
from ..records import RecordDecoder
from ..sse import DEFAULT_MAX_EVENT_BYTES, SseParser
from .types import Event, MessageChunk

#: At most this many text-less records are held (bounded memory on odd servers).
MAX_HELD = 64

_DELTA = b'"content_block_delta"'
_STOP = b'"message_stop"'
_ERROR = re.compile(rb'\s*\{\s*"type"\s*:\s*"error"')


def is_error(record: bytes) -> bool:
    """An ``error`` event's data (its type comes first, as the API writes it)."""
    return _ERROR.match(record) is not None


#: A delta or the end, wherever its ``type`` key is (a proxy may reorder keys; inside a
#: string the quotes would be escaped, so only a real key matches).
_FLUSHES = re.compile(rb'"type"\s*:\s*"(?:content_block_delta|message_stop|error)"')


def held_back(record: bytes) -> bool:
    """A text-less event, held until a delta, an error or ``message_stop`` follows (the
    framer here, and the SDK transport's pass-through, which must flush at the same
    points). One ``find`` on a delta as Anthropic writes it (its type first); a search
    of the record otherwise."""
    head = record[:40]
    if _DELTA in head or _STOP in head or is_error(record):
        return False
    return _FLUSHES.search(record) is None


class AnthropicFramer:
    """SSE records of one attempt, text-less ones held until a delta or the end follows."""

    __slots__ = ("_held", "_parser")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._parser = SseParser(max_event_bytes)
        self._held: list[bytes] = []

    @property
    def pending(self) -> int:
        return self._parser.pending + sum(len(r) for r in self._held)

    def feed(self, data: bytes) -> list[bytes]:
        records = self._parser.feed_data(data)
        if not records:
            return records
        held = self._held
        if not held and len(records) == 1 and not held_back(records[0]):
            return records  # the steady state: one delta per read
        out: list[bytes] = []
        for record in records:
            if held_back(record):
                held.append(record)
                if len(held) > MAX_HELD:
                    out.extend(held)
                    held.clear()
                continue
            if held:
                out.extend(held)
                held.clear()
            out.append(record)
        return out

    def close(self) -> bytes:
        """End of body: an unfinished event (held records are dropped: a body without
        ``message_stop`` is resumed, and the resume repeats what they said)."""
        self._held.clear()
        return self._parser.close()


class AnthropicDecoder:
    """Records of one read in, :class:`MessageChunk` out (stateless: shared)."""

    __slots__ = ("_records",)

    def __init__(self, chunk_type: type[Any]) -> None:
        if chunk_type is not MessageChunk:
            raise TypeError(f"the anthropic framing decodes MessageChunk, not {chunk_type}")
        self._records: RecordDecoder[Event] = RecordDecoder(Event)

    def decode_lines(self, lines: list[bytes]) -> list[Any]:
        events = self._records.decode(lines, lambda evs: _fold(evs))
        if len(events) == 1 and events[0].type == "content_block_delta":
            return [MessageChunk(event=events[0])]
        return _fold(events)


def _fold(events: list[Event]) -> list[MessageChunk]:
    out: list[MessageChunk] = []
    pending: list[Event] = []
    last: Event | None = None  # the message_delta
    for ev in events:
        kind = ev.type
        if kind == "content_block_delta":
            out.append(MessageChunk(before=pending, event=ev))
            pending = []
        elif kind == "message_delta":
            last = ev
        elif kind == "message_stop":
            final = last if last is not None else Event(type="message_delta")
            out.append(MessageChunk(before=pending, event=final, done=True))
            return out  # anything after message_stop is ignored
        elif kind == "error":
            err = ServerReportedError(_error_text(ev))
            err.chunks_before = out + ([MessageChunk(before=pending)] if pending else [])
            raise err
        else:
            pending.append(ev)
    if last is not None:
        pending.append(last)
    if pending:
        out.append(MessageChunk(before=pending))  # held too long, or an odd server
    return out


def _error_text(ev: Event) -> str:
    err = ev.error
    if err is None:
        return "unknown error"
    return f"{err.message} ({err.type})" if err.type else err.message
