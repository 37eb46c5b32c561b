"""The attempt's request, built from a per-URL prototype, is the one httpx would build.

``attempt._request`` skips ``build_request`` per attempt (its URL parsing and header
normalisation) and shares the prototype's header entries; only ``Content-Length`` is
the request's own. It must stay what ``build_request`` makes, body after body.
"""

from __future__ import annotations

import asyncio

from resilient_stream import StreamClient
from resilient_stream.attempt import _HEADERS, _request


def test_requests_from_one_prototype_match_build_request_and_do_not_touch_each_other() -> None:
    async def run() -> None:
        async with StreamClient("http://127.0.0.1:9") as client:
            ctx = client._ctx
            url = "http://127.0.0.1:9/api/generate"
            headers = _HEADERS["ndjson"]
            bodies = [b'{"model":"m","prompt":"a"}', b"{}", b'{"prompt":"' + b"x" * 5000 + b'"}']
            made = [_request(ctx, url, body, headers) for body in bodies]
            assert len(ctx.prototypes) == 1  # one prototype served all three
            for body, request in zip(bodies, made, strict=True):
                expected = ctx.http.build_request(
                    "POST", url, content=body, headers=headers, timeout=ctx.timeout
                )
                assert request.method == expected.method and request.url == expected.url
                assert request.headers.raw == expected.headers.raw, body[:20]
                assert request.headers["content-length"] == str(len(body))
                assert request.extensions == expected.extensions
                assert await request.aread() == body

    asyncio.run(run())
