"""The clients compared by bench_transport.py. Each runs ``streams`` concurrent
/api/generate streams and returns the number of chunks it decoded.

Every msgspec client decodes each NDJSON line into ``GenerateChunk`` with the
same helper, so the comparison is about the HTTP stack, not the decoder.
ollama-python uses its own decoding (json.loads + pydantic), as its users get.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from resilient_stream.formats.ollama.types import GenerateChunk

_decode = msgspec.json.Decoder(GenerateChunk).decode


class Lines:
    """Minimal NDJSON framer (bytes in, decoded chunks counted)."""

    __slots__ = ("buf", "chunks", "done")

    def __init__(self) -> None:
        self.buf = b""
        self.chunks = 0
        self.done = False

    def feed(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        end = data.rfind(b"\n")
        if end < 0:
            self.buf = data
            return
        self.buf = data[end + 1 :]
        for line in data[:end].split(b"\n"):
            if line:
                chunk = _decode(line)
                self.chunks += 1
                if chunk.done:
                    self.done = True


def body(i: int, tokens: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "prompt": f"stream {i}",
        "stream": True,
        "options": {"num_predict": tokens},
    }


def body_bytes(i: int, tokens: int) -> bytes:
    return msgspec.json.encode(body(i, tokens))


# --- ours -------------------------------------------------------------------------


async def run_ours(url: str, streams: int, tokens: int) -> int:
    import httpx

    from resilient_stream.transport import MultiplexedTransport

    transport = MultiplexedTransport()
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60)) as client:

        async def one(i: int) -> int:
            lines = Lines()
            async with client.stream(
                "POST", url + "/api/generate", content=body_bytes(i, tokens)
            ) as r:
                async for data in r.aiter_raw():
                    lines.feed(data)
            assert lines.done
            return lines.chunks

        return sum(await asyncio.gather(*(one(i) for i in range(streams))))


# --- stock httpx ----------------------------------------------------------------------


async def _run_httpx(url: str, streams: int, tokens: int, http2: bool) -> int:
    import httpx

    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(
        http1=not http2, http2=http2, limits=limits, timeout=httpx.Timeout(120)
    ) as client:

        async def one(i: int) -> int:
            lines = Lines()
            async with client.stream(
                "POST", url + "/api/generate", content=body_bytes(i, tokens)
            ) as r:
                async for data in r.aiter_raw():
                    lines.feed(data)
            assert lines.done
            return lines.chunks

        return sum(await asyncio.gather(*(one(i) for i in range(streams))))


async def run_httpx_h2(url: str, streams: int, tokens: int) -> int:
    return await _run_httpx(url, streams, tokens, http2=True)


async def run_httpx_h1(url: str, streams: int, tokens: int) -> int:
    return await _run_httpx(url, streams, tokens, http2=False)


# --- ollama-python -------------------------------------------------------------------------


async def run_ollama(url: str, streams: int, tokens: int) -> int:
    import ollama

    client = ollama.AsyncClient(host=url)

    async def one(i: int) -> int:
        n = 0
        done = False
        async for part in await client.generate(
            model="bench", prompt=f"stream {i}", stream=True, options={"num_predict": tokens}
        ):
            n += 1
            done = bool(part.done)
        assert done
        return n

    return sum(await asyncio.gather(*(one(i) for i in range(streams))))


# --- aiohttp ---------------------------------------------------------------------------------


async def run_aiohttp(url: str, streams: int, tokens: int) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> int:
            lines = Lines()
            async with session.post(
                url + "/api/generate",
                data=body_bytes(i, tokens),
                headers={"content-type": "application/json"},
            ) as r:
                async for data in r.content.iter_any():
                    lines.feed(data)
            assert lines.done
            return lines.chunks

        return sum(await asyncio.gather(*(one(i) for i in range(streams))))


# --- niquests (HTTP/2 via jh2) -----------------------------------------------------------------


async def run_niquests(url: str, streams: int, tokens: int) -> int:
    import niquests

    async with niquests.AsyncSession(
        disable_http1=True, pool_maxsize=streams + 10, pool_connections=10
    ) as session:

        async def one(i: int) -> int:
            lines = Lines()
            r = await session.post(
                url + "/api/generate",
                data=body_bytes(i, tokens),
                headers={"content-type": "application/json"},
                stream=True,
                timeout=120,
            )
            assert r.http_version == 20, r.http_version
            async for data in await r.iter_raw():
                lines.feed(data)
            await r.close()
            assert lines.done
            return lines.chunks

        return sum(await asyncio.gather(*(one(i) for i in range(streams))))


# --- the floor: asyncio.Protocol + h2 + msgspec, no resilience ------------------------------------


async def run_floor(url: str, streams: int, tokens: int) -> int:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()

    class Floor(asyncio.Protocol):
        def __init__(self) -> None:
            self.h2 = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding=None)
            )
            self.h2.local_settings = h2.settings.Settings(
                client=True,
                initial_values={
                    h2.settings.SettingCodes.ENABLE_PUSH: 0,
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
                },
            )
            self.ready: asyncio.Future[None] = loop.create_future()
            self.streams: dict[int, tuple[Lines, asyncio.Future[int]]] = {}
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.h2.initiate_connection()
            self.h2.increment_flow_control_window(1 << 24)
            transport.write(self.h2.data_to_send())

        def data_received(self, data: bytes) -> None:
            h2c = self.h2
            for ev in h2c.receive_data(data):
                if type(ev) is h2.events.DataReceived:
                    st = self.streams[ev.stream_id]
                    st[0].feed(ev.data)
                    h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif type(ev) is h2.events.StreamEnded:
                    lines, fut = self.streams.pop(ev.stream_id)
                    fut.set_result(lines.chunks)
                elif type(ev) is h2.events.RemoteSettingsChanged and not self.ready.done():
                    self.ready.set_result(None)
            out = h2c.data_to_send()
            if out:
                assert self.transport is not None
                self.transport.write(out)

        def request(self, i: int) -> asyncio.Future[int]:
            h2c = self.h2
            sid = h2c.get_next_available_stream_id()
            payload = body_bytes(i, tokens)
            h2c.send_headers(
                sid,
                [
                    (b":method", b"POST"),
                    (b":authority", f"{host}:{port}".encode()),
                    (b":scheme", b"http"),
                    (b":path", b"/api/generate"),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            )
            h2c.send_data(sid, payload, end_stream=True)
            fut: asyncio.Future[int] = loop.create_future()
            self.streams[sid] = (Lines(), fut)
            assert self.transport is not None
            self.transport.write(h2c.data_to_send())
            return fut

    per_conn = 100  # the server's MAX_CONCURRENT_STREAMS
    conns: list[Floor] = []
    for _ in range((streams + per_conn - 1) // per_conn):
        proto = Floor()
        await loop.create_connection(lambda p=proto: p, host, int(port))  # type: ignore[misc]
        await proto.ready
        conns.append(proto)
    futs = [conns[i // per_conn].request(i) for i in range(streams)]
    total = sum(await asyncio.gather(*futs))
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    return total


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[int]]] = {
    "ours": run_ours,
    "floor": run_floor,
    "httpx_h2": run_httpx_h2,
    "httpx_h1": run_httpx_h1,
    "aiohttp": run_aiohttp,
    "niquests_h2": run_niquests,
    "ollama": run_ollama,
}
