"""Compressed bodies (issue 10, item 3): streaming requests ask for identity, and a body
compressed anyway (a proxy with ``gzip on``) is decoded incrementally, as it comes.

Real sockets: a scripted HTTP/1.1 server on 127.0.0.1 compresses like nginx does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import zlib

import pytest
from support.scripted_server import Reply, Request, ScriptedServer

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.codec.content_encoding import UnsupportedEncodingError, inflater_for
from resilient_stream.errors import ProtocolError

pytestmark = pytest.mark.timeout(30)

CFG = StreamConfig(http2=False, backoff_initial=0.01, backoff_max=0.02, idle_timeout=5.0)
LINES = [json.dumps({"response": f"tok{i} "}).encode() + b"\n" for i in range(5)]
FINAL = json.dumps({"response": "", "done": True, "done_reason": "stop"}).encode() + b"\n"
EXPECTED = "".join(f"tok{i} " for i in range(5))


def compressor(coding: str) -> zlib._Compress:
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "raw-deflate": -15}[coding]
    return zlib.compressobj(wbits=wbits)


async def test_streaming_requests_ask_for_identity_so_a_negotiating_proxy_does_not_compress() -> (
    None
):
    """nginx compresses only what the client accepts: httpx's default 'gzip, deflate'
    made every attempt fail with MalformedChunkError."""

    async def handler(request: Request, reply: Reply) -> None:
        accepted = request.headers.get("accept-encoding", "")
        if "gzip" in accepted:
            z = compressor("gzip")
            await reply.start(headers={"content-encoding": "gzip"})
            await reply.send(z.compress(b"".join(LINES) + FINAL) + z.flush())
        else:
            await reply.start()
            await reply.send(b"".join(LINES) + FINAL)
        await reply.end()

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        result = await client.generate(model="m", prompt="p").collect()
    assert result.text == EXPECTED
    assert [r.headers.get("accept-encoding") for r in srv.requests] == ["identity"]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
async def test_a_body_compressed_anyway_is_decoded_as_it_arrives(coding: str) -> None:
    """The first chunk reaches the caller while the server still holds the rest
    (each line is sync-flushed, as nginx's gzip filter does per buffer)."""
    first_seen = asyncio.Event()
    order: list[str] = []

    async def handler(request: Request, reply: Reply) -> None:
        z = compressor(coding)
        header = "deflate" if coding == "raw-deflate" else coding
        await reply.start(headers={"content-encoding": header})
        await reply.send(z.compress(LINES[0]) + z.flush(zlib.Z_SYNC_FLUSH))
        try:
            await asyncio.wait_for(first_seen.wait(), 10)
            order.append("client saw the first chunk")
        except TimeoutError:
            order.append("timed out")
        order.append("server sent the rest")
        await reply.send(z.compress(b"".join(LINES[1:]) + FINAL) + z.flush())
        await reply.end()

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        stream = client.generate(model="m", prompt="p")
        texts = []
        async for chunk in stream:
            texts.append(chunk.response)
            first_seen.set()
    assert "".join(texts) == EXPECTED and stream.result.done
    assert order == ["client saw the first chunk", "server sent the rest"]
    assert stream.result.attempts == 1


@pytest.mark.skipif(
    importlib.util.find_spec("brotli") is not None
    or importlib.util.find_spec("brotlicffi") is not None,
    reason="brotli is installed here, so br bodies are decoded",
)
async def test_an_encoding_that_cannot_be_decoded_fails_at_once_with_a_clear_error() -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(headers={"content-encoding": "br"})
        await reply.send(b"\x8b\x02\x80not-really-brotli")
        await reply.end()

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        with pytest.raises(UnsupportedEncodingError) as info:
            await client.generate(model="m", prompt="p").collect()
    assert "'br'" in str(info.value) and "brotli" in str(info.value)
    assert len(srv.requests) == 1  # permanent: not retried


# --- the decoder itself (no sockets) --------------------------------------------------


def test_gzip_split_into_single_bytes_decodes_to_the_same_body() -> None:
    z = compressor("gzip")
    body = b"".join(LINES) * 20
    blob = z.compress(body) + z.flush()
    inflate = inflater_for("gzip")
    assert inflate is not None
    out = b"".join(inflate.decompress(blob[i : i + 1]) for i in range(len(blob)))
    assert out + inflate.flush() == body


def test_identity_and_absent_encodings_need_no_decoder() -> None:
    assert inflater_for(None) is None
    assert inflater_for("") is None
    assert inflater_for("identity") is None


def test_corrupt_gzip_is_a_protocol_error_not_a_crash() -> None:
    inflate = inflater_for("gzip")
    assert inflate is not None
    with pytest.raises(ProtocolError, match="corrupt"):
        inflate.decompress(b"\x1f\x8b\x08\x00garbage-garbage-garbage")


def test_two_codings_are_undone_in_reverse_order() -> None:
    inner = compressor("deflate")
    once = inner.compress(LINES[0]) + inner.flush()
    outer = compressor("gzip")
    twice = outer.compress(once) + outer.flush()
    inflate = inflater_for("deflate, gzip")
    assert inflate is not None
    assert inflate.decompress(twice) + inflate.flush() == LINES[0]
