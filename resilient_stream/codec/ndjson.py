"""NDJSON framing and chunk decoding, sans-I/O.

:class:`NdjsonFramer` takes bytes exactly as they arrive from the network and
hands back complete lines. It splits on ``b"\\n"`` only: never
``str.splitlines``, which also splits on ``\\x85``, ``\\u2028`` and ``\\u2029``
(legal inside JSON strings) and so corrupts NDJSON. A multi-byte UTF-8
character cut across reads needs no special care because we never decode a
partial line. A line that grows past ``max_line_bytes`` raises
:class:`LineTooLongError` instead of growing memory.

:class:`ChunkDecoder` turns the complete lines of one read into typed chunks in
a single msgspec call (the lines are joined into one JSON array), falling back
to line-by-line decoding only to pinpoint a bad line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from ..errors import LineTooLongError, MalformedChunkError, ServerReportedError
from .chunks import ChatChunk, GenerateChunk

DEFAULT_MAX_LINE_BYTES = 1_048_576

ChunkT = TypeVar("ChunkT", bound=GenerateChunk | ChatChunk)
T = TypeVar("T")


class NdjsonFramer:
    """Incremental line splitter: ``feed(bytes) -> [line, ...]``.

    Lines come back without their ``\\n`` (and without a ``\\r`` before it);
    blank lines are skipped. :meth:`close` returns what is left: an
    unterminated final line, empty if the body ended on a newline.
    """

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._buffer = b""
        self._max = max_line_bytes

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a complete line."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._buffer:
            data = self._buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self._buffer = data
            if len(data) > self._max:
                raise LineTooLongError(self._max, len(data))
            return []
        self._buffer = data[end + 1 :]
        if len(self._buffer) > self._max:
            raise LineTooLongError(self._max, len(self._buffer))
        lines = data[:end].split(b"\n")
        out: list[bytes] = []
        limit = self._max
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line or line.isspace():
                continue
            if len(line) > limit:
                raise LineTooLongError(limit, len(line))
            out.append(line)
        return out

    def close(self) -> bytes:
        """End of body: return (and forget) an unterminated last line, if any."""
        rest, self._buffer = self._buffer.rstrip(b"\r"), b""
        return b"" if rest.isspace() else rest


class RecordDecoder(Generic[T]):
    """JSON records (NDJSON lines, SSE data payloads) into typed values, one read at a time.

    The records of a read are decoded in one msgspec call (joined into a JSON
    array); only when that fails are they decoded one by one, to name the bad
    record in a :class:`MalformedChunkError` whose ``chunks_before`` (made by
    ``before`` from the values decoded ahead of it) keeps what already arrived.
    """

    __slots__ = ("_array", "_one")

    def __init__(self, value_type: type[T]) -> None:
        self._one: msgspec.json.Decoder[T] = msgspec.json.Decoder(value_type)
        self._array = msgspec.json.Decoder(list[value_type])  # type: ignore[valid-type]

    def decode(
        self, records: list[bytes], before: Callable[[list[T]], list[Any]] = list
    ) -> list[T]:
        if len(records) == 1:  # the common case on a paced stream: one token per read
            try:
                return [self._one.decode(records[0])]
            except msgspec.DecodeError:
                pass
        elif records:
            try:
                values: list[T] = self._array.decode(b"[" + b",".join(records) + b"]")
            except msgspec.DecodeError:
                pass
            else:
                if len(values) == len(records):
                    return values  # else a record held several values: find it below
        else:
            return []
        return self._one_by_one(records, before)

    def _one_by_one(self, records: list[bytes], before: Callable[[list[T]], list[Any]]) -> list[T]:
        out: list[T] = []
        for record in records:
            try:
                out.append(self._one.decode(record))
            except msgspec.ValidationError as exc:
                err = MalformedChunkError(f"unexpected shape ({exc})", record)
                err.chunks_before = before(out)
                raise err from exc
            except msgspec.DecodeError as exc:
                start = record.lstrip()[:1]
                reason = f"bad JSON ({exc})" if start == b"{" else "not JSON"
                if start == b"<":
                    reason = "an HTML page, not JSON (a proxy or gateway error page?)"
                err = MalformedChunkError(reason, record)
                err.chunks_before = before(out)
                raise err from exc
        return out


class ChunkDecoder(Generic[ChunkT]):
    """Decode complete NDJSON lines into ``chunk_type`` Structs.

    An ``{"error": "..."}`` line raises :class:`ServerReportedError` (the chunks
    before it attached as ``chunks_before``); anything that is not a JSON object
    of the right shape raises :class:`MalformedChunkError`.
    """

    __slots__ = ("_records", "chunk_type")

    def __init__(self, chunk_type: type[ChunkT]) -> None:
        self.chunk_type = chunk_type
        self._records: RecordDecoder[ChunkT] = RecordDecoder(chunk_type)

    def decode_lines(self, lines: list[bytes]) -> list[ChunkT]:
        """Decode lines, raising on an error line or a malformed one.

        Chunks that precede a bad line are attached to the raised error as
        ``chunks_before`` so that nothing already received is lost.
        """
        chunks = self._records.decode(lines)
        for i, chunk in enumerate(chunks):
            if chunk.error is not None:
                exc = ServerReportedError(chunk.error)
                exc.chunks_before = list(chunks[:i])
                raise exc
        return chunks
