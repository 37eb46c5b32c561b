"""Server-Sent Events framing, sans-I/O (the WHATWG ``text/event-stream`` rules).

:class:`SseParser` takes bytes exactly as they arrive and hands back complete
events: lines end with CRLF, LF or a lone CR (a CR at the end of one read and
an LF at the start of the next are one line end); a blank line ends an event;
``data:`` lines are joined with ``"\\n"``; ``event:``, ``id:`` and ``retry:``
are kept; lines starting with ``:`` are comments; one space after the colon is
dropped. Nothing is decoded before an event is complete, so a multi-byte UTF-8
character cut across reads needs no care. Everything buffered for one event
is bounded by ``max_event_bytes``: past it :class:`EventTooLargeError` is
raised instead of growing memory.

:class:`SseFramer` turns a body into each event's ``data`` as one record
(``b"[DONE]"`` included; a decoder gives it meaning); events without ``data``
(keep-alives, bare ``retry:``) give no record. The ``"sse"`` framing of OpenAI
streams is ``OpenAIFramer`` (``formats/openai/framing.py``), which adds holding
text-less chunks on top of the same :meth:`SseParser.feed_data`.

The common OpenAI-style event is one ``data: {json}`` line; it takes a fast
path of one ``split`` and one slice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LineTooLongError

#: The media type of an SSE body (what a request for one accepts).
MEDIA_TYPE = "text/event-stream"

DEFAULT_MAX_EVENT_BYTES = 1_048_576

_BOM = b"\xef\xbb\xbf"


class EventTooLargeError(LineTooLongError):
    """An SSE event (or one line of it) grew past the limit before it ended.

    A sibling of the NDJSON :class:`LineTooLongError` (it is one, for handlers
    that catch that); not retryable for the same reason.
    """

    def __init__(self, limit: int, buffered: int) -> None:
        super().__init__(limit, buffered)
        self.message = (
            f"SSE event exceeds max_line_bytes={limit} ({buffered} bytes buffered without the "
            "blank line that ends an event); raise StreamConfig.max_line_bytes if such events "
            "are expected"
        )
        self.args = (self.message,)


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event. ``data`` stays bytes (decode with :attr:`text`)."""

    data: bytes
    event: str = "message"
    #: The last event id seen so far on this stream (SSE carries it over).
    id: str | None = None
    #: A ``retry:`` reconnection time (ms) sent with this event, if any.
    retry: int | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class SseParser:
    """Incremental SSE parser: ``feed(bytes) -> [SseEvent, ...]``."""

    __slots__ = ("_last_id", "_max", "_pending", "_skip_lf", "_started", "events_seen")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._pending = b""  # normalised (LF only) bytes of the event in progress
        self._skip_lf = False  # the last read ended in CR: a leading LF is its pair
        self._started = False  # the BOM check is done
        self._max = max_event_bytes
        self._last_id: str | None = None
        self.events_seen = 0

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a complete event."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[SseEvent]:
        return [ev for block in self._blocks(data) if (ev := self._parse(block)) is not None]

    def feed_data(self, data: bytes) -> list[bytes]:
        """Like :meth:`feed`, but only each event's ``data`` (the hot path)."""
        if (
            data.startswith(b"data: ")
            and data.find(b"\n") == len(data) - 2
            and data.endswith(b"\n\n")
            and not self._pending
            and self._started
            and not self._skip_lf
            and b"\r" not in data
        ):  # exactly one whole one-line event: one token per read
            self.events_seen += 1
            return [data[6:-2]]
        out: list[bytes] = []
        for block in self._blocks(data):
            if block.startswith(b"data: ") and b"\n" not in block:
                out.append(block[6:])
                self.events_seen += 1
                continue
            ev = self._parse(block)
            if ev is not None:
                out.append(ev.data)
        return out

    def close(self) -> bytes:
        """End of stream: the unfinished event's bytes (b"" if it ended cleanly)."""
        rest, self._pending = self._pending, b""
        return b"" if rest.isspace() else rest

    # --- internals -------------------------------------------------------------

    def _blocks(self, data: bytes) -> list[bytes]:
        """Normalise line ends and cut complete events (text before a blank line)."""
        if not self._started:
            data = self._pending + data
            if len(data) < 3 and _BOM.startswith(data):
                self._pending = data  # could still be a BOM (reads may be 1 byte each)
                return []
            self._pending = b""
            self._started = True
            if data.startswith(_BOM):
                data = data[3:]
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if b"\r" in data:
            self._skip_lf = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._pending:
            data = self._pending + data
        if data.startswith(b"\n"):
            data = data.lstrip(b"\n")  # blank lines between events dispatch nothing
        parts = data.split(b"\n\n")
        rest = parts.pop()
        if len(rest) > self._max:
            raise EventTooLargeError(self._max, len(rest))
        self._pending = rest
        if not parts:
            return parts
        limit = self._max
        blocks: list[bytes] = []
        for part in parts:
            if not part:
                continue
            if len(part) > limit:
                raise EventTooLargeError(limit, len(part))
            # "a\n\n\nb": the third LF starts the next block with an empty line
            blocks.append(part.lstrip(b"\n") if part[0] == 0x0A else part)
        return blocks

    def _parse(self, block: bytes) -> SseEvent | None:
        data: list[bytes] = []
        event = "message"
        retry: int | None = None
        for line in block.split(b"\n"):
            if not line or line[0] == 0x3A:  # ":" comment
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace") or "message"
            elif name == b"id":
                if b"\x00" not in value:
                    self._last_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                retry = int(value)
        if not data:
            return None
        self.events_seen += 1
        return SseEvent(b"\n".join(data), event, self._last_id, retry)


class SseFramer:
    """A plain SSE record framer: each event's ``data`` is one record."""

    __slots__ = ("_parser",)

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._parser = SseParser(max_event_bytes)

    @property
    def pending(self) -> int:
        return self._parser.pending

    def feed(self, data: bytes) -> list[bytes]:
        return self._parser.feed_data(data)

    def close(self) -> bytes:
        return self._parser.close()
