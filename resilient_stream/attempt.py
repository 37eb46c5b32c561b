"""One HTTP exchange of a stream: send the request, check the answer's status and
encoding, and hand back the response whose body the stream reads.

Which replica, how long to wait, and what a failure means are decided by the
stream and its policy; this module only does the request.

**The short way.** ``AsyncClient.build_request`` + ``send`` cost more than the
rest of a stream's set-up together (URL parsing, header merging, the auth flow
and redirect generators, cookie extraction: ~250 us per request on 2 busy
cores). When the client uses none of what they are for (no auth, event hooks,
params, cookies, redirects followed), a request is built from a per-origin
prototype that ``build_request`` made once (same URL, same headers, in the same
order) and handed to the transport directly, doing what ``send`` would still do
(a ``Set-Cookie`` stored, httpx's log line, the response's ``request`` where
anything reads it: an error status, a cookie). Anything else goes through
``AsyncClient.send`` as before.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from .codec.content_encoding import IDENTITY, Inflater, UnsupportedEncodingError, inflater_for
from .context import StreamContext
from .failures import status_error
from .formats import FRAMINGS
from .formats.plan import AttemptPlan
from .transport.within import send_within

# identity: compression holds tokens back until a compressor block fills (a body that is
# compressed anyway is decoded as it comes: codec/content_encoding.py)
_HEADERS = {
    name: {"content-type": "application/json", "accept": f.accept, "accept-encoding": IDENTITY}
    for name, f in FRAMINGS.items()
}
_httpx_log = logging.getLogger("httpx")


async def send(
    ctx: StreamContext, plan: AttemptPlan, url: str, *, headers_within: float
) -> tuple[httpx.Response, Inflater | None]:
    """POST ``plan`` to ``url``; the 200 response (body unread) and its body decoder.

    A non-200 answer raises its :class:`~resilient_stream.errors.HTTPStatusError`
    (read and closed); no headers within ``headers_within`` seconds raises ``TimeoutError``.
    """
    response = await _exchange(ctx, plan, url, headers_within)
    try:
        inflate = inflater_for(response.headers.get("content-encoding"))
    except UnsupportedEncodingError:
        await response.aclose()
        raise
    return response, inflate


async def _exchange(
    ctx: StreamContext, plan: AttemptPlan, url: str, headers_within: float
) -> httpx.Response:
    headers = _HEADERS.get(plan.framing, _HEADERS["ndjson"])
    transport = ctx.transport
    if transport is not None and _plain(ctx.http):
        # the headers within the bound, on the transport's timing wheel where it has
        # one (no asyncio timer per attempt: transport/within.py)
        response = await _send_direct(
            ctx, transport, url + plan.path, plan.body, headers, headers_within
        )
        if response.status_code != 200:
            async with asyncio.timeout(headers_within):  # the error body, read within it
                raise await status_error(response, url)
        return response
    async with asyncio.timeout(headers_within):
        request = ctx.http.build_request(
            "POST", url + plan.path, content=plan.body, headers=headers, timeout=ctx.timeout
        )
        response = await ctx.http.send(request, stream=True)
        if response.status_code != 200:
            raise await status_error(response, url)
    return response


def _plain(http: httpx.AsyncClient) -> bool:
    """The client adds nothing to a request or its answer that the short way skips."""
    hooks = http.event_hooks
    return (
        http.auth is None
        and not hooks["request"]
        and not hooks["response"]
        and not http.params
        and not http.cookies
        and not http.follow_redirects
        and not http.is_closed
    )


async def _send_direct(
    ctx: StreamContext,
    transport: httpx.AsyncBaseTransport,
    url: str,
    body: bytes,
    headers: dict[str, str],
    headers_within: float,
) -> httpx.Response:
    request = _request(ctx, url, body, headers)
    try:
        response = await send_within(transport, request, headers_within)
    except httpx.RequestError as exc:  # as AsyncClient.send: the error names its request
        exc.request = request
        raise
    if response.status_code != 200 or "set-cookie" in response.headers:
        # what an error names and the cookie jar reads. A 200's response never leaves
        # the stream, which reads only its body: without its request, an open stream
        # holds no request, headers or body copy (4 objects less for the garbage
        # collector to scan, and the request's bytes)
        response.request = request
        if "set-cookie" in response.headers:
            ctx.http.cookies.extract_cookies(response)  # later requests go the long way
    if _httpx_log.isEnabledFor(logging.INFO):
        _httpx_log.info(
            'HTTP Request: %s %s "%s %d %s"',
            request.method,
            request.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )
    return response


def _request(ctx: StreamContext, url: str, body: bytes, headers: dict[str, str]) -> httpx.Request:
    """What ``build_request("POST", url, content=body, headers=headers)`` returns, from a
    prototype per URL (rebuilt when the client's own headers changed)."""
    http = ctx.http
    client_headers = http.headers.raw
    proto = ctx.prototypes.get(url)
    if proto is None or proto.client_headers != client_headers or proto.headers is not headers:
        proto = ctx.prototypes[url] = _Prototype(http, url, headers, ctx.timeout)
    # Request copies a Headers' list and shares its normalised entries (no per-stream
    # copy of each name and value: about 0.8 KB an open stream); Content-Length is
    # the one entry of its own
    request = httpx.Request(
        "POST",
        proto.url,
        headers=proto.base,
        stream=httpx.ByteStream(body),
        extensions=proto.extensions,
    )
    request.headers["Content-Length"] = str(len(body))
    # What Request(content=...) sets: aread() then skips reading the stream (~16 us of
    # a typing.AsyncIterable check and an async comprehension). Should httpx rename it,
    # aread() reads the stream as before.
    request._content = body
    return request


class _Prototype:
    """A request ``build_request`` made once for a URL: its URL, headers and extensions
    (the ``Content-Length`` at its place in the list, set per request)."""

    __slots__ = ("base", "client_headers", "extensions", "headers", "url")

    def __init__(
        self, http: httpx.AsyncClient, url: str, headers: dict[str, str], timeout: httpx.Timeout
    ) -> None:
        made = http.build_request("POST", url, content=b"-", headers=headers, timeout=timeout)
        self.client_headers = http.headers.raw
        self.headers = headers
        self.url = made.url
        self.base = made.headers
        self.extensions = made.extensions
