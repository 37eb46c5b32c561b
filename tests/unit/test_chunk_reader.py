"""ChunkReader's one-read shortcut answers exactly what the framer and decoder answer.

The shortcut hands a read that ends in a newline to msgspec whole; these tests feed
the same bodies, cut at the same places, to a ChunkReader and to the plain Reader
(framer.feed, then decoder.decode_lines) and compare every read's chunks, or the
error it raised (type, message, chunks before it), and what close() leaves.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.codec import GenerateChunk
from resilient_stream.errors import StreamError
from resilient_stream.formats import framing
from resilient_stream.formats.ndjson import NdjsonFramer
from resilient_stream.formats.ollama.framing import ChunkDecoder, ChunkReader
from resilient_stream.formats.reader import Reader

MAX = 96  # bytes a line may have: some records below are longer

RECORDS = [
    b'{"response":"a","done":false}\n',
    b'{"response":" tok","done":false,"eval_count":3}\r\n',
    b'{"response":"","done":true,"eval_count":4}\n',
    b"\n",  # blank
    b"   \r\n",  # blank, with a CR
    b'{"error":"model overloaded"}\n',  # Ollama's mid-stream failure
    b'{"response":"a","done":false}{"response":"b","done":false}\n',  # two glued
    b'{"response":"a","done":false}',  # no newline yet: the next record glues to it
    b'{"response":1}\n',  # wrong shape
    b"<html><body>502 Bad Gateway</body></html>\n",
    b"{not json\n",
    b'{"response":"' + b"x" * 100 + b'","done":false}\n',  # longer than MAX
    b'  {"response":"spaced","done":false}  \n',
]


def _outcome(reader: Reader, data: bytes) -> tuple[str, Any]:
    try:
        return "chunks", reader.read(data)
    except StreamError as exc:
        return type(exc).__name__, (str(exc), getattr(exc, "chunks_before", None))


def _pair() -> tuple[ChunkReader[GenerateChunk], Reader]:
    decoder = ChunkDecoder(GenerateChunk)
    return ChunkReader(MAX, decoder), Reader(NdjsonFramer(MAX), decoder)


@settings(max_examples=400, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(RECORDS) - 1), min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_every_read_answers_as_the_framer_and_decoder_do(picks: list[int], cuts: list[int]) -> None:
    body = b"".join(RECORDS[i] for i in picks)
    edges = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    fast, plain = _pair()
    for start, end in pairwise(edges):
        got, want = _outcome(fast, body[start:end]), _outcome(plain, body[start:end])
        assert got == want
        if got[0] != "chunks":
            return  # a stream reads no further after an error
    assert fast.close() == plain.close()


def test_a_whole_line_after_a_pending_part_is_not_decoded_alone() -> None:
    # The pending part and the new line are one (malformed) line: decoding the read
    # alone would deliver "b" and lose "a".
    fast, _ = _pair()
    assert fast.read(b'{"response":"a","done":false}') == []
    with pytest.raises(StreamError):
        fast.read(b'{"response":"b","done":false}\n')


def test_a_whole_line_longer_than_the_limit_is_refused() -> None:
    fast, _ = _pair()
    with pytest.raises(StreamError, match="exceeds"):
        fast.read(RECORDS[11])


def test_ndjson_attempts_read_through_the_chunk_reader() -> None:
    wire = framing("ndjson")
    reader = wire.reader(MAX, wire.new_decoder(GenerateChunk))
    assert isinstance(reader, ChunkReader)
    assert [c.response for c in reader.read(RECORDS[0])] == ["a"]
