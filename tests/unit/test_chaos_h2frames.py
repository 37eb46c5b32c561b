"""The HTTP/2 frame splitter and builders (sans-I/O, no sockets)."""

from __future__ import annotations

import itertools

import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, RstStreamFrame, WindowUpdateFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.chaos import h2frames as h2


def _data(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return h2.data_frame(sid, payload, flags)


def test_splitter_returns_whole_frames_across_arbitrary_chunking() -> None:
    stream = _data(1, b"a" * 10) + _data(3, b"bb", h2.FLAG_END_STREAM) + h2.rst_stream(5, 8)
    for step in (1, 2, 5, 9, 10, 100):
        sp = h2.FrameSplitter(expect_preface=False)
        frames: list[h2.Frame] = []
        for i in range(0, len(stream), step):
            frames.extend(sp.feed(stream[i : i + step]))
        assert [(f.type, f.stream_id, f.length) for f in frames] == [
            (h2.DATA, 1, 10),
            (h2.DATA, 3, 2),
            (h2.RST_STREAM, 5, 4),
        ]
        assert b"".join(f.raw for f in frames) == stream
        assert frames[1].end_stream
        assert sp.buffered == 0


def test_splitter_emits_the_client_preface_as_a_pseudo_frame() -> None:
    sp = h2.FrameSplitter(expect_preface=True)
    assert sp.feed(h2.PREFACE[:10]) == []
    frames = sp.feed(h2.PREFACE[10:] + _data(1, b"x"))
    assert [f.type for f in frames] == [h2.PREFACE_TYPE, h2.DATA]
    assert frames[0].raw == h2.PREFACE


def test_splitter_rejects_a_stream_that_is_not_http2_and_returns_the_bytes() -> None:
    sp = h2.FrameSplitter(expect_preface=True)
    with pytest.raises(h2.NotHttp2) as info:
        sp.feed(b"GET / HTTP/1.1\r\n")
    assert info.value.pending == b"GET / HTTP/1.1\r\n"


def test_built_frames_parse_with_hyperframe() -> None:
    rst, _ = Frame.parse_frame_header(memoryview(h2.rst_stream(7, 2)[:9]))
    assert isinstance(rst, RstStreamFrame) and rst.stream_id == 7
    rst.parse_body(memoryview(h2.rst_stream(7, 2)[9:]))
    assert rst.error_code == 2

    raw = h2.window_update(0, 12345)
    wu, _ = Frame.parse_frame_header(memoryview(raw[:9]))
    wu.parse_body(memoryview(raw[9:]))
    assert isinstance(wu, WindowUpdateFrame) and wu.window_increment == 12345

    raw = h2.goaway(9, 0)
    ga, _ = Frame.parse_frame_header(memoryview(raw[:9]))
    ga.parse_body(memoryview(raw[9:]))
    assert isinstance(ga, GoAwayFrame) and ga.last_stream_id == 9 and ga.error_code == 0


def test_padded_data_frame_payload_excludes_padding() -> None:
    df = DataFrame(1)
    df.data = b"hello"
    df.pad_length = 4
    df.flags.add("PADDED")
    sp = h2.FrameSplitter(expect_preface=False)
    (f,) = sp.feed(df.serialize())
    assert f.length == 1 + 5 + 4
    assert f.data() == b"hello"


frames_strategy = st.lists(
    st.tuples(
        st.integers(0, 9), st.integers(0, 255), st.integers(0, 2**31 - 1), st.binary(max_size=300)
    ),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(0, 7000), max_size=30))
def test_any_chunking_gives_back_the_same_frames(
    frames: list[tuple[int, int, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(h2.frame(t, fl, sid, p) for t, fl, sid, p in frames)
    points = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    sp = h2.FrameSplitter(expect_preface=False)
    got: list[h2.Frame] = []
    for a, b in itertools.pairwise(points):
        got.extend(sp.feed(stream[a:b]))
    assert [(f.type, f.flags, f.stream_id, f.raw[9:]) for f in got] == frames
    assert sp.buffered == 0
