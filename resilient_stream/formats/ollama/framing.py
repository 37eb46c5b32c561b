"""Ollama's NDJSON lines into typed chunks (sans-I/O).

The body is split into lines by :class:`~resilient_stream.formats.ndjson.NdjsonFramer`;
:class:`ChunkDecoder` turns the complete lines of one read into typed chunks in
a single msgspec call (the lines are joined into one JSON array), falling back
to line-by-line decoding only to pinpoint a bad line. An ``{"error": "..."}``
line is Ollama's way of failing mid-stream: it raises.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from ...errors import ServerReportedError
from ..records import RecordDecoder
from .types import ChatChunk, GenerateChunk

ChunkT = TypeVar("ChunkT", bound=GenerateChunk | ChatChunk)


class ChunkDecoder(Generic[ChunkT]):
    """Decode complete NDJSON lines into ``chunk_type`` Structs.

    An ``{"error": "..."}`` line raises :class:`ServerReportedError` (the chunks
    before it attached as ``chunks_before``); anything that is not a JSON object
    of the right shape raises :class:`MalformedChunkError`.
    """

    __slots__ = ("_one", "_records", "chunk_type")

    def __init__(self, chunk_type: type[ChunkT]) -> None:
        self.chunk_type = chunk_type
        self._records: RecordDecoder[ChunkT] = RecordDecoder(chunk_type)
        self._one = self._records.one

    def decode_lines(self, lines: list[bytes]) -> list[ChunkT]:
        """Decode lines, raising on an error line or a malformed one.

        Chunks that precede a bad line are attached to the raised error as
        ``chunks_before`` so that nothing already received is lost.
        """
        if len(lines) == 1:  # a paced stream's usual read: one line, no error in it
            try:
                one = self._one(lines[0])
            except msgspec.DecodeError:
                pass  # the general path below names what is wrong
            else:
                if one.error is None:
                    return [one]
        chunks = self._records.decode(lines)
        for i, chunk in enumerate(chunks):
            if chunk.error is not None:
                exc = ServerReportedError(chunk.error)
                exc.chunks_before = list(chunks[:i])
                raise exc
        return chunks
