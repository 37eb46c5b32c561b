"""The sans-I/O SSE parser: WHATWG field rules, every line ending, any split of the
input gives the same events, garbage gives typed errors with bounded memory."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_stream.errors import LineTooLongError
from resilient_stream.formats.sse import EventTooLargeError, SseEvent, SseFramer, SseParser


def parse_all(
    data: bytes, *, pieces: list[int] | None = None, limit: int = 1 << 20
) -> list[SseEvent]:
    parser = SseParser(limit)
    events: list[SseEvent] = []
    if pieces is None:
        events.extend(parser.feed(data))
    else:
        pos = 0
        for cut in sorted(pieces):
            events.extend(parser.feed(data[pos:cut]))
            pos = cut
        events.extend(parser.feed(data[pos:]))
    return events


def test_data_lines_are_joined_with_newline_and_fields_kept() -> None:
    stream = b"event: delta\nid: 7\nretry: 1500\ndata: first\ndata:second\ndata:  two spaces\n\n"
    (ev,) = parse_all(stream)
    assert ev == SseEvent(b"first\nsecond\n two spaces", "delta", "7", 1500)
    assert ev.text == "first\nsecond\n two spaces"


def test_comments_and_unknown_fields_are_ignored() -> None:
    stream = b": keep-alive\n\n:another\ndata: x\nfoo: bar\n: mid comment\n\n"
    assert [e.data for e in parse_all(stream)] == [b"x"]


def test_event_without_data_dispatches_nothing_but_id_carries_over() -> None:
    stream = b"id: 42\n\nretry: 10\n\ndata: a\n\n"
    (ev,) = parse_all(stream)
    assert ev.data == b"a" and ev.id == "42" and ev.retry is None


def test_empty_data_line_gives_an_empty_event() -> None:
    assert [e.data for e in parse_all(b"data:\n\n")] == [b""]


def test_invalid_retry_and_id_with_nul_are_ignored() -> None:
    (ev,) = parse_all(b"retry: 12a\nid: a\x00b\ndata: x\n\n")
    assert ev.retry is None and ev.id is None


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_gives_the_same_events(eol: bytes) -> None:
    stream = eol.join([b"data: one", b"data: two", b"", b"data: three", b"", b""])
    assert [e.data for e in parse_all(stream)] == [b"one\ntwo", b"three"]


def test_cr_at_the_end_of_a_read_and_lf_at_the_start_of_the_next_are_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    events = parser.feed(b"\n\r\n")
    assert [e.data for e in events] == [b"a\nb"]


def test_split_inside_a_multibyte_character() -> None:
    stream = "data: 世界 🚀 ok\n\n".encode()
    cut = stream.index("🚀".encode()) + 2
    parser = SseParser()
    assert parser.feed(stream[:cut]) == []
    (ev,) = parser.feed(stream[cut:])
    assert ev.text == "世界 🚀 ok"


def test_bom_at_the_start_is_dropped_even_when_split() -> None:
    parser = SseParser()
    out = parser.feed(b"\xef\xbb")
    out += parser.feed(b"\xbfdata: x\n\n")
    assert [e.data for e in out] == [b"x"]


def test_bom_split_over_one_byte_reads_keeps_the_first_event() -> None:
    """Issue 10 item 11: with 1-byte reads the BOM's second byte ended the BOM check and
    the first event was lost (httpx-sse handles this)."""
    parser = SseParser()
    out = []
    for i, byte in enumerate(b"\xef\xbb\xbfdata: first\n\ndata: second\n\n"):
        out += parser.feed_data(bytes([byte])) if i % 2 else parser.feed(bytes([byte]))
    assert [e if isinstance(e, bytes) else e.data for e in out] == [b"first", b"second"]


def test_extra_blank_lines_between_events_dispatch_nothing() -> None:
    stream = b"\n\n\ndata: a\n\n\n\n\ndata: b\n\n\n"
    assert [e.data for e in parse_all(stream)] == [b"a", b"b"]


def test_close_returns_an_unfinished_event() -> None:
    parser = SseParser()
    parser.feed(b"data: whole\n\ndata: half")
    assert parser.close() == b"data: half"
    parser.feed(b"data: x\n\n\n")
    assert parser.close() == b""


def test_an_event_past_the_limit_raises_instead_of_growing() -> None:
    parser = SseParser(64)
    parser.feed(b"data: " + b"x" * 50 + b"\n")
    with pytest.raises(EventTooLargeError) as info:
        parser.feed(b"data: " + b"y" * 50 + b"\n")
    err = info.value
    assert isinstance(err, LineTooLongError)
    assert not err.retryable
    assert "SSE event exceeds max_line_bytes=64" in str(err)


def test_a_complete_event_past_the_limit_raises_too() -> None:
    with pytest.raises(EventTooLargeError):
        SseParser(16).feed(b"data: " + b"z" * 40 + b"\n\ndata: ok\n\n")


def test_framer_returns_data_payloads_including_done() -> None:
    framer = SseFramer()
    records = framer.feed(b'data: {"a":1}\n\n: ping\n\nevent: x\ndata: 2\n\ndata: [DONE]\n\n')
    assert records == [b'{"a":1}', b"2", b"[DONE]"]


# --- properties ----------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=30,
)
_event = st.fixed_dictionaries(
    {
        "data": st.lists(_text, min_size=1, max_size=3),
        "event": st.none() | st.text(alphabet="abcxyz", min_size=1, max_size=5),
        "comment": st.none() | _text,
    }
)


def _serialize(events: list[dict[str, Any]], eols: list[bytes]) -> bytes:
    out: list[bytes] = []
    i = 0
    last = b""

    def eol() -> bytes:
        # A lone CR followed by a lone LF would read as one CRLF line end: avoid that pair.
        nonlocal i, last
        i += 1
        e = eols[i % len(eols)]
        last = b"\r" if e == b"\n" and last == b"\r" else e
        return last

    for ev in events:
        if ev["comment"] is not None:
            out.append(b":" + ev["comment"].encode() + eol())
        if ev["event"] is not None:
            out.append(b"event: " + ev["event"].encode() + eol())
        for line in ev["data"]:
            out.append(b"data: " + line.encode() + eol())
        out.append(eol())
    return b"".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(_event, max_size=8),
    eols=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=4),
    data=st.data(),
)
def test_any_split_of_a_valid_stream_gives_the_same_events(
    events: list[dict[str, Any]], eols: list[bytes], data: st.DataObject
) -> None:
    stream = _serialize(events, eols)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    whole = parse_all(stream)
    split = parse_all(stream, pieces=cuts)
    assert split == whole
    assert [e.text for e in whole] == ["\n".join(ev["data"]) for ev in events]
    assert [e.event for e in whole] == [ev["event"] or "message" for ev in events]


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.binary(max_size=80) | st.sampled_from([b"\n", b"\r", b"data: ", b":", b"\n\n"]),
        max_size=40,
    )
)
def test_garbage_gives_events_or_a_typed_error_with_bounded_memory(chunks: list[bytes]) -> None:
    limit = 100
    parser = SseParser(limit)
    for chunk in chunks:
        try:
            events = parser.feed(chunk)
        except EventTooLargeError:
            return
        assert all(isinstance(e.data, bytes) for e in events)
        assert parser.pending <= limit
