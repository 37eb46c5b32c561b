"""One HTTP exchange of a stream: send the request, check the answer's status and
encoding, and hand back the response whose body the stream reads.

Which replica, how long to wait, and what a failure means are decided by the
stream and its policy; this module only does the request.
"""

from __future__ import annotations

import asyncio

import httpx

from .codec.content_encoding import IDENTITY, Inflater, UnsupportedEncodingError, inflater_for
from .context import StreamContext
from .failures import status_error
from .formats import FRAMINGS
from .formats.plan import AttemptPlan

# identity: compression holds tokens back until a compressor block fills (a body that is
# compressed anyway is decoded as it comes: codec/content_encoding.py)
_HEADERS = {
    name: {"content-type": "application/json", "accept": f.accept, "accept-encoding": IDENTITY}
    for name, f in FRAMINGS.items()
}


async def send(
    ctx: StreamContext, plan: AttemptPlan, url: str, *, headers_within: float
) -> tuple[httpx.Response, Inflater | None]:
    """POST ``plan`` to ``url``; the 200 response (body unread) and its body decoder.

    A non-200 answer raises its :class:`~resilient_stream.errors.HTTPStatusError`
    (read and closed); no headers within ``headers_within`` seconds raises ``TimeoutError``.
    """
    request = ctx.http.build_request(
        "POST",
        url + plan.path,
        content=plan.body,
        headers=_HEADERS.get(plan.framing, _HEADERS["ndjson"]),
        timeout=ctx.timeout,
    )
    async with asyncio.timeout(headers_within):
        response = await ctx.http.send(request, stream=True)
        if response.status_code != 200:
            raise await status_error(response, url)
    try:
        inflate = inflater_for(response.headers.get("content-encoding"))
    except UnsupportedEncodingError:
        await response.aclose()
        raise
    return response, inflate
