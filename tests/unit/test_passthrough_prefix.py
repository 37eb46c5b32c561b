"""The SSE pass-through's prefix gate: reads that start like the last whole text record.

``Sse.prefix_of`` names a text record's bytes through its text key; ``PassThrough.body``
then runs the rest of ``Sse.scan``'s first case on a read with that prefix, without the
scan's call (four byte scans instead of seven). The gate must never forward what the
scan would not forward whole: these tests try it against adversarial tails for each
server's record shape, and run the real body over a stream whose prefix changes,
comparing it with the scan alone.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from support.passthrough_reads import scan_alone, through

from resilient_stream.sdk.wire import MORE, Sse


def _gate(known: tuple[bytes, bool], data: bytes) -> bool:
    """The pass-through loop's inlined prefix gate (``PassThrough.body``), as it reads there."""
    prefix, settled = known
    lead = len(prefix)
    return (
        data.startswith(prefix)
        and data[-1] == 10
        and data[lead] != 34
        and data.find(b"\n", lead) == len(data) - 2
        and (settled or data.find(b'"finish_reason":null', lead) > 0)
        and data.find(b'"error"', lead - 1) < 0
    )


def _event(json: bytes) -> bytes:
    return b"data: " + json + b"\n\n"


# one text record of each server's shape, its text "tok"
SHAPES = {
    "openai": b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"tok"},'
    b'"logprobs":null,"finish_reason":null}]}',
    # vLLM's continuous usage stats (the reference server's shape): the tail changes
    "usage-every-chunk": b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"tok"},"logprobs":null,"finish_reason":null}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}',
    # llama-server: finish_reason ahead of the delta
    "llama-server": b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"tok"}}],'
    b'"created":1,"id":"chatcmpl-x","model":"m","object":"chat.completion.chunk"}',
}

# what the rest of a read might hold, worst first: quotes, escapes, newlines, the
# needles the scan looks for, the end of an event
PIECES = [
    b'"', b"\\", b"\n", b"\n\n", b"\r", b"error", b'"error"', b'"error":', b"data: {",
    b'"finish_reason":"stop"', b'"finish_reason":null', b'"content":"', b'"content":""',
    b"[DONE]", b"}]}", b"a", b" tok", b"\\u00e9", b"\xc3\xa9", b":", b",", b"{", b'"},',
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_read_with_the_last_records_prefix_passes_only_if_the_scan_forwards_it_whole(
    name: str,
) -> None:
    wire = Sse()
    record = _event(SHAPES[name])
    assert wire.scan(record) == (len(record), MORE)
    known = wire.prefix_of(record)
    assert known is not None
    prefix, settled = known
    assert prefix.endswith(b'"content":"') and record.startswith(prefix)
    assert settled == (name == "llama-server")
    rest = record[len(prefix) :]
    rng = random.Random(name)
    tails = [rest, b"x" + rest, b"error" + rest, rest[:-2], rest + rest] + [
        b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 5))) + rng.choice([b"", rest])
        for _ in range(4000)
    ]
    passed = 0
    for tail in tails:
        data = prefix + tail
        if _gate(known, data):
            passed += 1
            assert wire.scan(data) == (len(data), MORE), data
    assert passed > 100 and _gate(known, record)


@pytest.mark.parametrize(
    "record",
    [
        _event(b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
               b'"finish_reason":null}]}'),  # no text: the framer holds it
        _event(b'{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}'),
        _event(b'{"choices":[{"index":0,"delta":{"content":"a"}}]}'),  # no finish_reason
        _event(b'{"error":{"message":"x"},"choices":[{"delta":{"content":"a"},'
               b'"finish_reason":null}]}'),
        _event(b'{"choices":[{"delta":{"reasoning_content":"a"},"finish_reason":null}]}'),
        # completions: a content key after its text key would be judged first
        _event(b'{"choices":[{"index":0,"text":"a","finish_reason":null}]}'),
        _event(b'{"choices":[{"delta":{"content":"a"},"finish_reason":null}]}') * 2,
        b"event: x\n" + _event(b'{"choices":[{"delta":{"content":"a"},"finish_reason":null}]}'),
        _event(b"[DONE]"),
        b": ping\n\n",
    ],
)  # fmt: skip
def test_no_prefix_from_a_read_that_is_not_one_plain_text_record(record: bytes) -> None:
    assert Sse().prefix_of(record) is None


class _CountingSse(Sse):
    scans = 0

    def scan(self, buf: bytes) -> tuple[int, int]:
        self.scans += 1
        return super().scan(buf)


def _chunk(text: bytes | None, created: int = 1, finish: bytes = b"null") -> bytes:
    delta = b'{"content":"' + text + b'"}' if text is not None else b"{}"
    return _event(
        b'{"id":"c","object":"chat.completion.chunk","created":%d,"model":"m","choices":'
        b'[{"index":0,"delta":%s,"finish_reason":%s}]}' % (created, delta, finish)
    )


def test_the_body_forwards_what_the_scan_alone_would_and_scans_only_on_a_new_prefix() -> None:
    """One record a read: a role chunk, texts (one a second later with a new
    ``created``, as llama-server writes it), a text that finishes its choice, the
    finish, ``[DONE]``. Reads with the known prefix the scan holds back (an empty text,
    one a server should never send, its text opening with a bare quote, the finishing
    one, one that ends between the lines of its event) are held here too, and one with
    a raw newline (two events: the second a comment) is forwarded in part."""
    texts = [b"Hel", b"lo", b" w", b'\\"q\\"', b"or", b"", b"ld", b'"x', b"!", b"a\n\n: c", b"?"]
    texts += [b" t%d" % i for i in range(35)]
    reads = [_chunk(None, finish=b"null")]
    reads += [_chunk(t, created=1 if i < 20 else 2) for i, t in enumerate(texts)]
    reads += [_chunk(b"p", created=2)[:-1] + b":", b" comment\n\n"]  # split at a comment
    reads += [_chunk(b"fin", created=2, finish=b'"stop"')]
    reads += [_chunk(None, created=2, finish=b'"stop"') + b"data: [DONE]\n\n"]

    wire = _CountingSse()
    got, passing = asyncio.run(through(reads, wire))
    expected, left, _ = scan_alone(reads, Sse())
    assert got == expected and b"".join(got) == b"".join(reads) and not left
    assert passing.done and passing.failure is None
    assert len(got) == len(reads) - 5  # each held read went with the next
    # scanned: the role chunk (held), the first text (flushed with it: two events, no
    # prefix), the second (its prefix learnt), the four held reads and the ones that
    # flushed them, the newline's two reads, the new ``created`` (relearnt), the end.
    # The other 36 texts went by the prefix, the quoted one among them.
    assert wire.scans == 14


def test_a_read_with_the_known_prefix_and_an_error_after_its_text_is_handed_over() -> None:
    reads = [_chunk(t) for t in (b"a", b"b", b"c")]
    reads += [reads[0][:-3] + b',"error":{"message":"boom"}}\n\n', _chunk(b"d")]
    got, passing = asyncio.run(through(reads, Sse()))
    expected, left, _ = scan_alone(reads, Sse())
    assert got == expected == reads[:3] and left == reads[3]
    assert passing.pending == reads[3] and not passing.done  # the engine judges it
