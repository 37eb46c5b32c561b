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

from typing import Generic, TypeVar

import msgspec

from ..errors import LineTooLongError, MalformedChunkError, ServerReportedError
from .chunks import ChatChunk, GenerateChunk

DEFAULT_MAX_LINE_BYTES = 1_048_576

ChunkT = TypeVar("ChunkT", bound=GenerateChunk | ChatChunk)


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


class ChunkDecoder(Generic[ChunkT]):
    """Decode complete NDJSON lines into ``chunk_type`` Structs.

    An ``{"error": "..."}`` line raises :class:`ServerReportedError` (after the
    chunks before it have been returned, via ``pending_error``); anything that
    is not a JSON object of the right shape raises :class:`MalformedChunkError`.
    """

    __slots__ = ("_array", "_one", "chunk_type")

    def __init__(self, chunk_type: type[ChunkT]) -> None:
        self.chunk_type = chunk_type
        self._one = msgspec.json.Decoder(chunk_type)
        self._array = msgspec.json.Decoder(list[chunk_type])  # type: ignore[valid-type]

    def decode_lines(self, lines: list[bytes]) -> list[ChunkT]:
        """Decode lines, raising on an error line or a malformed one.

        Chunks that precede a bad line are attached to the raised error as
        ``chunks_before`` so that nothing already received is lost.
        """
        if not lines:
            return []
        chunks: list[ChunkT] | None
        if len(lines) == 1:  # the common case on a paced stream: one token per read
            try:
                chunk = self._one.decode(lines[0])
            except msgspec.DecodeError:
                chunks = None  # explained below
            else:
                if chunk.error is not None:
                    raise ServerReportedError(chunk.error)
                return [chunk]
        else:
            try:
                chunks = self._array.decode(b"[" + b",".join(lines) + b"]")
            except msgspec.DecodeError:
                chunks = None
            if chunks is not None and len(chunks) != len(lines):
                chunks = None  # a line held several values: find it below
        if chunks is None:
            chunks = self._decode_one_by_one(lines)
        for i, chunk in enumerate(chunks):
            if chunk.error is not None:
                exc = ServerReportedError(chunk.error)
                exc.chunks_before = list(chunks[:i])
                raise exc
        return chunks

    def _decode_one_by_one(self, lines: list[bytes]) -> list[ChunkT]:
        out: list[ChunkT] = []
        for line in lines:
            try:
                out.append(self._one.decode(line))
            except msgspec.ValidationError as exc:
                err = MalformedChunkError(f"unexpected shape ({exc})", line)
                err.chunks_before = list(out)
                raise err from exc
            except msgspec.DecodeError as exc:
                reason = "not JSON" if not line.lstrip().startswith(b"{") else f"bad JSON ({exc})"
                if line.lstrip()[:1] == b"<":
                    reason = "an HTML page, not NDJSON (a proxy or gateway error page?)"
                err = MalformedChunkError(reason, line)
                err.chunks_before = list(out)
                raise err from exc
        return out
