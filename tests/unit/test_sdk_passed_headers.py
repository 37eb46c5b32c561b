"""Which first answers the SDK reads as they are, and with which headers (one raw pass).

``_passed_headers`` replaced two ``Headers.get`` calls and a ``multi_items`` copy (a
fresh header list decodes every name and value to find its encoding first). These
tests pin it to what those calls decided, over every combination of the headers that
matter, in both wire formats.
"""

from __future__ import annotations

import itertools

import httpx
import pytest

from resilient_stream.sdk.transport import _NOT_RETURNED, _passed_headers
from resilient_stream.sdk.wire import Ndjson, Sse, Wire

CHOICES: list[list[tuple[str, str]]] = [
    [],
    [("Content-Type", "application/x-ndjson")],
    [("content-type", "text/event-stream; charset=utf-8")],
    [("Content-Type", "TEXT/EVENT-STREAM")],
    [("content-type", "text/html")],
    [("content-type", "application/json"), ("content-type", "text/plain")],
]
ENCODINGS: list[list[tuple[str, str]]] = [
    [],
    [("Content-Encoding", "identity")],
    [("content-encoding", "IDENTITY")],
    [("content-encoding", "gzip")],
]
OTHERS: list[list[tuple[str, str]]] = [
    [],
    [("Content-Length", "12"), ("x-request-id", "abc")],
    [("Transfer-Encoding", "chunked"), ("Connection", "keep-alive"), ("Server", "s")],
]


def reference(response: httpx.Response, wire: Wire) -> list[tuple[str, str]] | None:
    """What ``_passable`` and ``_out_headers`` decided, before the raw pass."""
    headers = response.headers
    passable = (
        response.status_code == 200
        and wire.accepts(headers.get("content-type", "").lower())
        and headers.get("content-encoding", "identity").lower() == "identity"
    )
    if not passable:
        return None
    out = [(k, v) for k, v in headers.multi_items() if k.lower() not in _NOT_RETURNED]
    if not any(k.lower() == "content-type" for k, _ in out):
        out.append(("content-type", wire.content_type))
    return out


@pytest.mark.parametrize("wire", [Ndjson(), Sse()], ids=["ndjson", "sse"])
@pytest.mark.parametrize("status", [200, 500])
def test_the_raw_pass_decides_and_copies_as_the_header_lookups_did(wire: Wire, status: int) -> None:
    checked = 0
    for ctype, encoding, others in itertools.product(CHOICES, ENCODINGS, OTHERS):
        for order in (ctype + encoding + others, others + encoding + ctype):
            response = httpx.Response(status, headers=order)
            got = _passed_headers(response, wire)
            want = reference(response, wire)
            if want is None:
                assert got is None, order
            else:
                assert got is not None, order
                assert httpx.Headers(got).multi_items() == want, order
            checked += 1
    assert checked == 2 * len(CHOICES) * len(ENCODINGS) * len(OTHERS)


def test_a_passed_answer_keeps_its_own_headers_and_drops_the_bodys() -> None:
    response = httpx.Response(
        200,
        headers=[
            ("content-type", "application/x-ndjson"),
            ("content-length", "99"),
            ("x-trace", "t1"),
            ("content-encoding", "identity"),
        ],
    )
    out = _passed_headers(response, Ndjson())
    assert out == [(b"content-type", b"application/x-ndjson"), (b"x-trace", b"t1")]
    # no content type: the format's own is added
    bare = _passed_headers(httpx.Response(200, headers=[("x-trace", "t2")]), Ndjson())
    assert bare == [(b"x-trace", b"t2"), (b"content-type", b"application/x-ndjson")]
    assert _passed_headers(httpx.Response(200), Sse()) is None  # SSE needs its type
