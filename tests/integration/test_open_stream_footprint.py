"""What an open stream keeps alive while it waits for its next token.

At 10,000 open streams every object a stream holds is memory, and every reference
in it is work for each full pass of the garbage collector (bench_e2e's "GC %"
column). These pin what an open stream no longer holds: the request it was sent
with (StreamClient never hands out the response it read), and a second copy of
the response headers in the transport's stream state.
"""

from __future__ import annotations

import asyncio
import gc

import httpx
import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.refserver import ReferenceServer
from resilient_stream.transport import MultiplexedTransport
from resilient_stream.transport.stream import H2Stream

OPEN = 20


def _alive(kind: type) -> list[object]:
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is kind]


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
@pytest.mark.reference_server(tokens_per_second=5, stop_probability=0.0)
async def test_an_open_stream_keeps_no_request_once_answered(
    reference_server: ReferenceServer, http2: bool
) -> None:
    cfg = StreamConfig(http2=http2)
    async with StreamClient(reference_server.url, config=cfg) as client:
        before = len(_alive(httpx.Request))
        streams = [
            client.generate(model="m", prompt=f"p{i}", options={"num_predict": 50, "seed": i})
            for i in range(OPEN)
        ]
        try:
            firsts = await asyncio.wait_for(
                asyncio.gather(*(s.__anext__() for s in streams)), timeout=30
            )
            assert all(f.response for f in firsts)  # every stream is open and flowing
            assert len(_alive(httpx.Request)) - before == 0
        finally:
            for s in streams:
                await s.aclose()


@pytest.mark.reference_server(tokens_per_second=5, stop_probability=0.0)
async def test_the_transport_keeps_response_headers_only_in_the_response(
    reference_server: ReferenceServer,
) -> None:
    async with httpx.AsyncClient(transport=MultiplexedTransport()) as http:
        body = {"model": "m", "prompt": "p", "options": {"num_predict": 50}}
        async with http.stream("POST", reference_server.url + "/api/generate", json=body) as r:
            assert r.headers["content-type"] == "application/x-ndjson"
            async for _ in r.aiter_raw():
                break
            ours = [s for s in _alive(H2Stream) if s.status == 200]
            assert len(ours) == 1
            assert ours[0].headers == ()
