"""body_reader: our transport's body is read directly (its own deadline, no watchdog),
any other body, or one spliced over ours by a wrapping transport, through httpx."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import httpx

from resilient_stream.transport.response import BODY_EXTENSION, H2ResponseStream
from resilient_stream.transport.stream import H2Stream
from resilient_stream.watchdog import WatchedBody, body_reader


def _h2_body() -> H2ResponseStream:
    conn = SimpleNamespace(deadlines=None)  # never read from here
    return H2ResponseStream(cast(Any, conn), H2Stream(1, 65535), first=None, idle=None)


def test_our_body_handed_to_the_caller_as_is_is_read_directly() -> None:
    body = _h2_body()
    response = httpx.Response(200, stream=body, extensions={BODY_EXTENSION: body})
    read, watched = body_reader(response)
    assert watched is None
    assert read == body.read


def test_our_body_under_httpx_s_forwarding_wrapper_is_read_directly() -> None:
    body = _h2_body()
    response = httpx.Response(200, stream=body, extensions={BODY_EXTENSION: body})
    response.stream = httpx._client.BoundAsyncStream(body, response=response, start=0.0)
    read, watched = body_reader(response)
    assert watched is None
    assert read == body.read


def test_a_body_spliced_over_ours_is_read_through_httpx_under_a_watchdog() -> None:
    ours = _h2_body()
    spliced = httpx.ByteStream(b'{"done": true}\n')
    # a wrapping transport copies our extensions onto a response with its own body
    response = httpx.Response(200, stream=spliced, extensions={BODY_EXTENSION: ours})
    read, watched = body_reader(response)
    assert isinstance(watched, WatchedBody)
    assert read != ours.read
    watched.close()


def test_a_body_of_another_transport_is_read_under_a_watchdog() -> None:
    response = httpx.Response(200, stream=httpx.ByteStream(b"x"))
    _, watched = body_reader(response)
    assert isinstance(watched, WatchedBody)
    watched.close()
