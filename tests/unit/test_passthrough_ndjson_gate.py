"""The NDJSON pass-through's inline gate for Ollama's text line (``Wire.steady``).

``PassThrough.body`` forwards a read that ends with ``"done":false}\\n`` and holds one
newline without calling ``Ndjson.scan`` (its first case). The gate must never forward
what the scan would not forward whole as text: these tests try it on adversarial
reads, and run the real body over reads that end like a text line but hold a last
line or an error before it, comparing it with the scan alone.
"""

from __future__ import annotations

import asyncio
import random

from support.passthrough_reads import scan_alone, through

from resilient_stream.sdk.wire import DONE, MORE, Ndjson

STEADY = b'"done":false}\n'


def _gate(data: bytes) -> bool:
    """The pass-through loop's inlined steady gate (``PassThrough.body``), as it reads there."""
    n = len(data)
    return (
        n > len(STEADY)
        and data[-3] == STEADY[-3]
        and data.endswith(STEADY)
        and data.find(b"\n") == n - 1
    )


def _line(text: bytes) -> bytes:
    return b'{"model":"m","created_at":"2024-01-01T00:00:00Z","response":"%s","done":false}\n' % (
        text
    )


LAST = b'{"model":"m","response":"","done":true,"done_reason":"stop","eval_count":3}\n'
ERROR = b'{"error":"model overloaded"}\n'
PIECES = [
    b'"', b"\\", b"\n", b"true", b'"done":true', b'"error"', b'"error":"x",', b"}", b"{",
    b"a", b" tok", b"\\u00e9", b"\xc3\xa9", b",", b":", LAST, ERROR, _line(b"x"),
]  # fmt: skip


def test_a_read_passes_the_gate_only_if_the_scan_forwards_it_whole_as_text() -> None:
    wire = Ndjson()
    rng = random.Random(7)
    reads = [_line(b"tok"), LAST + _line(b"a"), ERROR + _line(b"a"), _line(b"a") * 2]
    reads += [
        b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6))) + rng.choice([b"", STEADY])
        for _ in range(5000)
    ]
    passed = 0
    for data in reads:
        if _gate(data):
            passed += 1
            assert wire.scan(data) == (len(data), MORE), data
    assert passed > 100 and _gate(_line(b"tok"))
    assert not _gate(LAST + _line(b"a")) and not _gate(ERROR + _line(b"a"))


class _CountingNdjson(Ndjson):
    """Counts the scan's calls; without ``plain`` (the other inline case), so that a
    read the steady gate does not take is scanned."""

    plain = None
    scans = 0

    def scan(self, buf: bytes) -> tuple[int, int]:
        self.scans += 1
        return super().scan(buf)


def test_text_lines_go_by_the_gate_and_the_rest_by_the_scan() -> None:
    texts = [_line(b" t%d" % i) for i in range(30)]
    split = _line(b"cut")
    counted = b'{"model":"m","response":"n","done":false,"eval_count":31}\n'  # field after done
    reads = [*texts[:10], split[:20], split[20:], *texts[10:], counted, LAST]
    wire = _CountingNdjson()
    got, passing = asyncio.run(through(reads, wire))
    expected, left, _ = scan_alone(reads, Ndjson())
    assert got == expected and b"".join(got) == b"".join(reads) and not left
    assert passing.done and passing.failure is None
    # scanned: the two halves of the split line, the line with a field after done, the
    # last one; the 30 text lines went by the gate
    assert wire.scans == 4


def test_a_read_ending_like_a_text_line_after_the_last_line_ends_the_stream() -> None:
    reads = [_line(b"a"), _line(b"b"), LAST + _line(b"c")]
    got, passing = asyncio.run(through(reads, Ndjson()))
    expected, left, what = scan_alone(reads, Ndjson())
    assert got == expected == [reads[0], reads[1], LAST]
    assert what == DONE and left == _line(b"c")
    assert passing.done and passing.failure is None


def test_a_read_ending_like_a_text_line_after_an_error_is_handed_over() -> None:
    reads = [_line(b"a"), ERROR + _line(b"b")]
    got, passing = asyncio.run(through(reads, Ndjson()))
    expected, left, _ = scan_alone(reads, Ndjson())
    assert got == expected == [reads[0]] and left == reads[1]
    assert passing.pending == reads[1] and not passing.done  # the engine judges it
