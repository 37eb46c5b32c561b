"""Send a request whose response headers must come within a bound, the cheapest way.

``MultiplexedTransport`` (and a transport that passes to it, ``bounds_headers``)
takes the bound with the request (the ``"headers"`` key of ``stream_timeouts``,
timeouts.py) and files it on its connection's timing wheel; any other transport gets
an ``asyncio.timeout`` around the call (a timer-heap push and cancel of Python
objects per request). Either way the caller sees the same thing: the response, or
``TimeoutError``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ..errors import HeadersTimeoutError
from .timeouts import STREAM_TIMEOUTS


def bounds_headers(transport: Any) -> bool:
    """``transport`` honours the ``"headers"`` bound of ``stream_timeouts`` itself."""
    return getattr(transport, "bounds_headers", False) is True


def headers_only(seconds: float) -> dict[str, float | None]:
    """``stream_timeouts`` for a caller that watches the body itself: the headers
    within ``seconds``, no read bound."""
    return {"headers": seconds, "first": None, "idle": None}


async def send_within(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, seconds: float
) -> httpx.Response:
    """``transport``'s response to ``request``; no headers within ``seconds`` raises
    ``TimeoutError``. The body is not bounded (the caller watches it)."""
    if bounds_headers(transport):
        request.extensions = {**request.extensions, STREAM_TIMEOUTS: headers_only(seconds)}
        try:
            return await transport.handle_async_request(request)
        except HeadersTimeoutError:
            raise TimeoutError from None
    async with asyncio.timeout(seconds):
        return await transport.handle_async_request(request)
