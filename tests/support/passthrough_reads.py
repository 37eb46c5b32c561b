"""Run ``PassThrough.body`` over a body given as its reads, and the wire's scan alone
over the same reads: what the pass-through tests compare."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from resilient_stream import StreamConfig
from resilient_stream.sdk.passthrough import PassThrough
from resilient_stream.sdk.wire import MORE, Wire


class Reads(httpx.AsyncByteStream):
    """A body that arrives as these reads, one an event-loop turn."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = reads

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for data in self._reads:
            yield data
            await asyncio.sleep(0)


async def through(reads: list[bytes], wire: Wire) -> tuple[list[bytes], PassThrough]:
    """What the pass-through forwards, read by read, and the pass-through itself."""
    response = httpx.Response(200, stream=Reads(reads))
    passing = PassThrough(
        response, wire, StreamConfig.load(env={}), token_limit=None, endpoint="test"
    )
    got = [out async for out in passing.body()]
    return got, passing


def scan_alone(reads: list[bytes], wire: Wire) -> tuple[list[bytes], bytes, int]:
    """What ``wire.scan`` forwards fed the same reads as the body feeds it, what stays,
    and how the last scan ended (MORE, DONE or STOP)."""
    forwarded, pending, what = [], b"", MORE
    for data in reads:
        buf = pending + data
        end, what = wire.scan(buf)
        if end:
            forwarded.append(buf[:end])
        pending = buf[end:]
        if what:
            break
    return forwarded, pending, what
