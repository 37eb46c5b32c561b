"""The client paths bench_e2e.py compares, and the probe each one reports through.

Every path runs ``streams`` concurrent streams of ``tokens`` tokens against the
reference server and touches the same :class:`Probe` the same way: one counter
increment per decoded chunk and one call on each stream's first chunk (time to
first token; the moment the last stream gets its first chunk ends the set-up
phase). The NDJSON paths send the same /api/generate body; the openai paths the
same /v1/chat/completions request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from resilient_stream.formats.ollama.types import GenerateChunk

_decode = msgspec.json.Decoder(GenerateChunk).decode


class Probe:
    """Counters shared by every stream of one run (same cost on every path)."""

    __slots__ = ("chunks", "first_seen", "setup_chunks", "setup_cpu", "streams", "ttft")

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.chunks = 0
        self.first_seen = 0
        self.ttft = [0.0] * streams
        #: process_time and chunk count when the last stream got its first chunk.
        self.setup_cpu = 0.0
        self.setup_chunks = 0

    def first(self, i: int, t0: float) -> None:
        self.ttft[i] = time.perf_counter() - t0
        self.first_seen += 1
        if self.first_seen == self.streams:
            self.setup_cpu = time.process_time()
            self.setup_chunks = self.chunks


class Lines:
    """Minimal NDJSON framer: bytes in, GenerateChunk decoded per line, counted."""

    __slots__ = ("buf", "chunks", "done")

    def __init__(self) -> None:
        self.buf = b""
        self.chunks = 0
        self.done = False

    def feed(self, data: bytes) -> int:
        if self.buf:
            data = self.buf + data
        end = data.rfind(b"\n")
        if end < 0:
            self.buf = data
            return 0
        self.buf = data[end + 1 :]
        n = 0
        for line in data[:end].split(b"\n"):
            if line:
                n += 1
                if _decode(line).done:
                    self.done = True
        self.chunks += n
        return n


def body_bytes(i: int, tokens: int) -> bytes:
    return msgspec.json.encode(
        {"model": "bench", "prompt": f"stream {i}", "options": {"num_predict": tokens}}
    )


#: Our paths' connection cap. The default (10 connections x the server's 100 streams each
#: = 1000 streams) makes streams past 1000 wait for a slot and fail after pool_timeout
#: (measured: PoolTimeout / RetryBudgetExhausted at 10,000); aiohttp runs unlimited.
MAX_CONNECTIONS = 100


def _config() -> Any:
    from resilient_stream import StreamConfig

    return StreamConfig.load(env={}, max_connections=MAX_CONNECTIONS)


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"stream {i}"}]


Run = Callable[[str, int, int, Probe | None], Awaitable[int]]


async def _gather(n: int, one: Callable[[int], Awaitable[int]]) -> int:
    return sum(await asyncio.gather(*(one(i) for i in range(n))))


async def _count(parts: Any, i: int, probe: Probe | None) -> int:
    """Iterate an async iterator of chunks, reporting each one to the probe."""
    t0 = time.perf_counter()
    n = 0
    async for _ in parts:
        n += 1
        if probe is not None:
            probe.chunks += 1
            if n == 1:
                probe.first(i, t0)
    return n


async def _count_raw(chunks: Any, i: int, t0: float, probe: Probe | None) -> int:
    """Frame and decode raw NDJSON bytes (the bare and aiohttp loops)."""
    lines = Lines()
    async for data in chunks:
        got = lines.feed(data)
        if got and probe is not None:
            probe.chunks += got
            if lines.chunks == got:
                probe.first(i, t0)
    if not lines.done:
        raise RuntimeError("stream ended without done: true")
    return lines.chunks


# --- ours ----------------------------------------------------------------------------


async def run_streamclient(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    from resilient_stream import StreamClient

    async with StreamClient(url, config=_config()) as c:
        opts = {"num_predict": tokens}

        async def one(i: int) -> int:
            return await _count(
                c.generate(model="bench", prompt=f"stream {i}", options=opts), i, probe
            )

        return await _gather(streams, one)


async def run_dropin(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    from resilient_stream.ollama import AsyncClient

    client = AsyncClient(url, config=_config())
    opts = {"num_predict": tokens}

    async def one(i: int) -> int:
        parts = await client.generate("bench", f"stream {i}", options=opts, stream=True)
        return await _count(parts, i, probe)

    try:
        return await _gather(streams, one)
    finally:
        await client.close()


async def run_sdk_ollama(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    import ollama

    from resilient_stream.sdk import ResilientTransport

    client = ollama.AsyncClient(host=url, transport=ResilientTransport(config=_config()))
    opts = {"num_predict": tokens}

    async def one(i: int) -> int:
        parts = await client.generate("bench", f"stream {i}", options=opts, stream=True)
        return await _count(parts, i, probe)

    try:
        return await _gather(streams, one)
    finally:
        await client._client.aclose()


async def run_sdk_openai(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    import httpx
    import openai

    from resilient_stream.sdk import ResilientTransport

    http = httpx.AsyncClient(transport=ResilientTransport(config=_config()))
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", http_client=http)
    return await _openai_streams(client, streams, tokens, probe)


async def run_bare(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    import httpx

    from resilient_stream.transport import MultiplexedTransport

    async with httpx.AsyncClient(
        transport=MultiplexedTransport(_config()), timeout=httpx.Timeout(None)
    ) as client:

        async def one(i: int) -> int:
            t0 = time.perf_counter()
            async with client.stream(
                "POST", url + "/api/generate", content=body_bytes(i, tokens)
            ) as r:
                return await _count_raw(r.aiter_raw(), i, t0, probe)

        return await _gather(streams, one)


# --- peers ---------------------------------------------------------------------------


async def run_aiohttp(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> int:
            t0 = time.perf_counter()
            async with session.post(
                url + "/api/generate",
                data=body_bytes(i, tokens),
                headers={"content-type": "application/json"},
            ) as r:
                return await _count_raw(r.content.iter_any(), i, t0, probe)

        return await _gather(streams, one)


async def run_ollama(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    import ollama

    client = ollama.AsyncClient(host=url)  # stock httpx, its default pool: as users get it
    opts = {"num_predict": tokens}

    async def one(i: int) -> int:
        parts = await client.generate("bench", f"stream {i}", options=opts, stream=True)
        return await _count(parts, i, probe)

    try:
        return await _gather(streams, one)
    finally:
        await client._client.aclose()


async def run_openai(url: str, streams: int, tokens: int, probe: Probe | None) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench")  # stock httpx
    return await _openai_streams(client, streams, tokens, probe)


async def _openai_streams(client: Any, streams: int, tokens: int, probe: Probe | None) -> int:
    async def one(i: int) -> int:
        t0 = time.perf_counter()
        stream = await client.chat.completions.create(
            model="bench", messages=_messages(i), stream=True, max_tokens=tokens
        )
        n = 0
        async for _ in stream:
            n += 1
            if probe is not None:
                probe.chunks += 1
                if n == 1:
                    probe.first(i, t0)
        return n

    try:
        return await _gather(streams, one)
    finally:
        await client.close()


#: name -> (label, run, wire format). Order is the table's.
PATHS: dict[str, tuple[str, Run, str]] = {
    "streamclient": ("StreamClient", run_streamclient, "ndjson"),
    "dropin": ("drop-in resilient_stream.ollama.AsyncClient", run_dropin, "ndjson"),
    "sdk_ollama": ("ollama.AsyncClient + ResilientTransport", run_sdk_ollama, "ndjson"),
    "sdk_openai": ("openai.AsyncOpenAI + ResilientTransport", run_sdk_openai, "sse"),
    "bare": ("bare MultiplexedTransport + msgspec loop", run_bare, "ndjson"),
    "aiohttp": ("aiohttp + msgspec loop", run_aiohttp, "ndjson"),
    "ollama": ("official ollama.AsyncClient (stock httpx)", run_ollama, "ndjson"),
    "openai": ("openai.AsyncOpenAI (stock httpx)", run_openai, "sse"),
}

#: Paths whose stock pool queues streams: max connections (waves = streams / this).
POOL_LIMITS = {"ollama": 100, "openai": 1000}
