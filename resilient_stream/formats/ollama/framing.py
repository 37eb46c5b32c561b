"""Ollama's NDJSON lines into typed chunks (sans-I/O).

The body is split into lines by :class:`~resilient_stream.formats.ndjson.NdjsonFramer`;
:class:`ChunkDecoder` turns the complete lines of one read into typed chunks in
a single msgspec call (the lines are joined into one JSON array), falling back
to line-by-line decoding only to pinpoint a bad line. An ``{"error": "..."}``
line is Ollama's way of failing mid-stream: it raises. :class:`ChunkReader` is
the two in one call, with a read of one whole line decoded in one step.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from ...errors import ServerReportedError
from ..ndjson import NdjsonFramer
from ..records import RecordDecoder
from .types import ChatChunk, GenerateChunk

ChunkT = TypeVar("ChunkT", bound=GenerateChunk | ChatChunk)


class ChunkDecoder(Generic[ChunkT]):
    """Decode complete NDJSON lines into ``chunk_type`` Structs.

    An ``{"error": "..."}`` line raises :class:`ServerReportedError` (the chunks
    before it attached as ``chunks_before``); anything that is not a JSON object
    of the right shape raises :class:`MalformedChunkError`.
    """

    __slots__ = ("_records", "chunk_type", "one")

    def __init__(self, chunk_type: type[ChunkT]) -> None:
        self.chunk_type = chunk_type
        self._records: RecordDecoder[ChunkT] = RecordDecoder(chunk_type)
        #: One line's chunk (raises ``msgspec.DecodeError``; error lines not checked).
        self.one = self._records.one

    def decode_lines(self, lines: list[bytes]) -> list[ChunkT]:
        """Decode lines, raising on an error line or a malformed one.

        Chunks that precede a bad line are attached to the raised error as
        ``chunks_before`` so that nothing already received is lost.
        """
        if len(lines) == 1:  # a paced stream's usual read: one line, no error in it
            try:
                one = self.one(lines[0])
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


class ChunkReader(NdjsonFramer, Generic[ChunkT]):
    """An NDJSON body's reader: its framer, which also decodes, with a shortcut.

    A paced stream's read is one whole line with nothing pending. That read is handed
    to msgspec as it is: JSON allows the trailing ``\\r\\n``, and a read of more than
    one line fails its check for trailing characters, as a blank or bad line fails to
    decode; anything but a decoded chunk without an error takes the framer and the
    decoder, which answer it (split, name the bad line, raise the error). One call a
    record instead of four, no line sliced off, and one object an attempt
    (tests/unit/test_chunk_reader.py pins it to the two, read after read).
    """

    __slots__ = ("_one", "decoder")

    def __init__(self, max_line_bytes: int, decoder: ChunkDecoder[ChunkT]) -> None:
        super().__init__(max_line_bytes)
        self.decoder = decoder
        self._one = decoder.one

    def read(self, data: bytes) -> list[ChunkT]:
        if data[-1:] == b"\n" and len(data) <= self._max and not self.buffer:
            try:
                one = self._one(data)
            except msgspec.DecodeError:
                pass
            else:
                if one.error is None:
                    return [one]
        return self.decoder.decode_lines(self.feed(data))
