"""NDJSON framer and chunk decoder: framing rules, limits, typed errors, any split."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.codec import ChatChunk, ChunkDecoder, GenerateChunk, NdjsonFramer
from resilient_stream.errors import (
    LineTooLongError,
    MalformedChunkError,
    ProtocolError,
    ServerReportedError,
    StreamError,
)

FINAL = (
    b'{"model":"m","created_at":"t","response":"","done":true,"done_reason":"length",'
    b'"context":[1,2],"total_duration":10,"load_duration":1,"prompt_eval_count":3,'
    b'"prompt_eval_duration":2,"eval_count":4,"eval_duration":5}'
)


def test_splits_on_newline_only_not_unicode_line_separators() -> None:
    # \u2028, \u2029 and \x85 are legal inside JSON strings; str.splitlines breaks on them.
    text = '{"response":"a\u2028b\u2029c\x85d"}\n'.encode()
    lines = NdjsonFramer().feed(text)
    chunk = ChunkDecoder(GenerateChunk).decode_lines(lines)
    assert [c.response for c in chunk] == ["a\u2028b\u2029c\x85d"]


def test_crlf_and_blank_lines() -> None:
    framer = NdjsonFramer()
    assert framer.feed(b'{"response":"a"}\r\n\r\n\n  \n{"response":"b"}\r\n') == [
        b'{"response":"a"}',
        b'{"response":"b"}',
    ]
    assert framer.close() == b""


def test_line_split_across_many_reads_and_inside_a_utf8_character() -> None:
    data = '{"response":"你好🚀"}\n'.encode()
    framer = NdjsonFramer()
    lines: list[bytes] = []
    for i in range(len(data)):
        lines += framer.feed(data[i : i + 1])
    assert ChunkDecoder(GenerateChunk).decode_lines(lines)[0].response == "你好🚀"


def test_unterminated_last_line_is_returned_by_close() -> None:
    framer = NdjsonFramer()
    assert framer.feed(b'{"response":"a"}\n{"resp') == [b'{"response":"a"}']
    assert framer.pending == 6
    assert framer.close() == b'{"resp'
    assert framer.pending == 0


def test_line_longer_than_limit_raises_without_buffering_more() -> None:
    framer = NdjsonFramer(max_line_bytes=100)
    framer.feed(b"x" * 60)
    with pytest.raises(LineTooLongError) as info:
        framer.feed(b"x" * 60)
    assert info.value.limit == 100
    assert "max_line_bytes" in str(info.value)


def test_complete_but_long_line_in_one_read_raises() -> None:
    with pytest.raises(LineTooLongError):
        NdjsonFramer(max_line_bytes=10).feed(b"y" * 50 + b"\n{}\n")


def test_final_chunk_fields_decode() -> None:
    (chunk,) = ChunkDecoder(GenerateChunk).decode_lines([FINAL])
    assert chunk.done and chunk.done_reason == "length"
    assert (chunk.eval_count, chunk.prompt_eval_count, chunk.context) == (4, 3, [1, 2])


def test_chat_chunk_with_tool_calls_and_thinking() -> None:
    line = (
        b'{"model":"m","message":{"role":"assistant","content":"","thinking":"hm",'
        b'"tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]},"done":false}'
    )
    (chunk,) = ChunkDecoder(ChatChunk).decode_lines([line])
    assert chunk.message.thinking == "hm"
    assert chunk.message.tool_calls is not None
    assert chunk.message.tool_calls[0].function.arguments == {"x": 1}


def test_unknown_fields_are_tolerated() -> None:
    (chunk,) = ChunkDecoder(GenerateChunk).decode_lines([b'{"response":"a","brand_new":{"x":1}}'])
    assert chunk.response == "a"


def test_error_line_becomes_typed_error_keeping_earlier_chunks() -> None:
    lines = [b'{"response":"a"}', b'{"error":"an error was encountered while running the model"}']
    with pytest.raises(ServerReportedError) as info:
        ChunkDecoder(GenerateChunk).decode_lines(lines)
    assert info.value.retryable
    assert [c.response for c in info.value.chunks_before] == ["a"]


def test_error_line_naming_a_bad_request_is_permanent() -> None:
    with pytest.raises(ServerReportedError) as info:
        ChunkDecoder(ChatChunk).decode_lines([b'{"error":"model \'x\' not found"}'])
    assert not info.value.retryable


def test_html_error_page_is_explained() -> None:
    with pytest.raises(MalformedChunkError, match="HTML"):
        ChunkDecoder(GenerateChunk).decode_lines([b"<html><body>502 Bad Gateway</body></html>"])


def test_bad_line_among_good_ones_keeps_the_good_ones() -> None:
    lines = [b'{"response":"a"}', b'{"response":"b"}', b'{"response": 5}']
    with pytest.raises(MalformedChunkError, match="unexpected shape") as info:
        ChunkDecoder(GenerateChunk).decode_lines(lines)
    assert [c.response for c in info.value.chunks_before] == ["a", "b"]


def test_line_holding_two_values_is_rejected_not_silently_merged() -> None:
    with pytest.raises(MalformedChunkError):
        ChunkDecoder(GenerateChunk).decode_lines([b'{"response":"a"},{"response":"b"}', b"{}"])


# --- property tests ------------------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@st.composite
def ndjson_streams(draw: st.DrawFn) -> tuple[bytes, list[str], list[int]]:
    words = draw(st.lists(texts, min_size=1, max_size=20))
    enc = msgspec.json.Encoder()
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = b"".join(enc.encode(GenerateChunk(response=w)) + sep for w in words)
    body += FINAL + sep
    cuts = draw(st.lists(st.integers(0, len(body)), max_size=12))
    return body, words, cuts


@settings(max_examples=300, deadline=None)
@given(ndjson_streams())
def test_any_split_of_a_valid_stream_decodes_to_the_same_chunks(
    case: tuple[bytes, list[str], list[int]],
) -> None:
    body, words, cuts = case
    framer = NdjsonFramer()
    decoder = ChunkDecoder(GenerateChunk)
    chunks: list[GenerateChunk] = []
    prev = 0
    for cut in [*sorted(cuts), len(body)]:
        chunks += decoder.decode_lines(framer.feed(body[prev:cut]))
        prev = cut
    assert framer.close() == b""
    assert [c.response for c in chunks[:-1]] == words
    assert chunks[-1].done and chunks[-1].eval_count == 4


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8))
def test_garbage_gives_a_typed_error_or_chunks_never_a_crash(
    garbage: bytes, cuts: list[int]
) -> None:
    framer = NdjsonFramer(max_line_bytes=64)
    decoder = ChunkDecoder(GenerateChunk)
    prev = 0
    try:
        for cut in [*sorted(c for c in cuts if c <= len(garbage)), len(garbage)]:
            decoder.decode_lines(framer.feed(garbage[prev:cut]))
            prev = cut
            assert framer.pending <= 64  # memory stays bounded
    except StreamError as exc:
        assert isinstance(exc, ProtocolError | ServerReportedError)


class _ReferenceFramer:
    """The framer before its one-line shortcut (split, strip, skip, check), as a model."""

    def __init__(self, max_line_bytes: int) -> None:
        self._buffer = b""
        self._max = max_line_bytes

    def feed(self, data: bytes) -> list[bytes]:
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
        out = []
        for line in data[:end].split(b"\n"):
            line = line[:-1] if line.endswith(b"\r") else line
            if not line or line.isspace():
                continue
            if len(line) > self._max:
                raise LineTooLongError(self._max, len(line))
            out.append(line)
        return out


def test_the_one_line_shortcut_frames_as_the_general_path_does() -> None:
    rng = random.Random(7)
    alphabet = [b"a", b"{}", b" ", b"\r", b"\n", b"\n", b"\t"]
    for _ in range(3000):
        limit = rng.choice([3, 6, 1_000])
        ours, model = NdjsonFramer(limit), _ReferenceFramer(limit)
        for _ in range(rng.randint(1, 6)):
            data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
            try:
                want: object = model.feed(data)
            except LineTooLongError as exc:
                want = ("too long", exc.args)
            try:
                got: object = ours.feed(data)
            except LineTooLongError as exc:
                got = ("too long", exc.args)
            assert got == want, data
            if isinstance(want, tuple):
                break
