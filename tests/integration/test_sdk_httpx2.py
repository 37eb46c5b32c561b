"""The httpx2 bridge: our transports under SDKs built on ``httpx2``, real sockets.

``openai`` 3.x is built on httpx2 (it still takes an httpx client; anthropic 1.0+
takes only httpx2 ones, see test_sdk_anthropic.py), so it is the SDK here, with the
one line ``http_client=httpx2.AsyncClient(transport=Httpx2Transport(...))``; plain
``httpx2`` clients check what the bridge does to bodies and errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import httpx2
import openai
import pytest
from support.sdk_calls import FAST, MESSAGES, N

from resilient_stream import StreamConfig
from resilient_stream.errors import AttemptsExhausted, IncompleteStreamError
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer
from resilient_stream.sdk import (
    Httpx2SyncTransport,
    Httpx2Transport,
    ResilientSyncTransport,
    ResilientTransport,
)

pytestmark = pytest.mark.timeout(60)


def transport(**config: object) -> ResilientTransport:
    return ResilientTransport(config=StreamConfig(**{**FAST, **config}))  # type: ignore[arg-type]


async def chat_text(url: str, t: Httpx2Transport | None) -> tuple[str, int]:
    """openai's async chat stream over an httpx2 client: text, usage's completion tokens."""
    http = httpx2.AsyncClient(transport=t) if t else httpx2.AsyncClient()
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", http_client=http, max_retries=0)
    out: list[str] = []
    usage = -1
    try:
        chat = await client.chat.completions.create(
            model="ref",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=N,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for c in chat:
            usage = c.usage.completion_tokens if c.usage else usage
            out.extend(choice.delta.content or "" for choice in c.choices)
    finally:
        await client.close()
    return "".join(out), usage


@pytest.fixture
async def expected() -> str:
    async with ReferenceServer(stop_probability=0.0) as srv:
        text, usage = await chat_text(srv.url, None)
    assert usage == N
    return text


@pytest.mark.parametrize("fault", ["drop_connection", "reset_stream", "truncate_line", "stall"])
async def test_openai_on_httpx2_resumes_byte_identical_through_the_bridge(
    expected: str, fault: str
) -> None:
    plan = FaultSchedule({0: Fault(fault, after_tokens=5)})  # type: ignore[arg-type]
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with Httpx2Transport(transport()) as t:
            text, usage = await chat_text(srv.url, t)
        assert srv.stats.requests == 2
    assert text == expected and usage == N


async def test_sync_openai_on_httpx2_resumes_byte_identical_through_the_bridge(
    expected: str,
) -> None:
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=7)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        with Httpx2SyncTransport(ResilientSyncTransport(config=StreamConfig(**FAST))) as t:
            got = await asyncio.to_thread(sync_chat, srv.url, t)
        assert srv.stats.requests == 2
    assert got == expected


def sync_chat(url: str, t: Httpx2SyncTransport | None) -> str:
    http = httpx2.Client(transport=t) if t else httpx2.Client()
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", http_client=http, max_retries=0)
    try:
        chat = client.chat.completions.create(
            model="ref",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=N,
            temperature=0,
            stream=True,
        )
        return "".join(choice.delta.content or "" for c in chat for choice in c.choices)
    finally:
        client.close()


async def test_a_give_up_after_output_is_the_httpx2_error_with_ours_as_its_cause() -> None:
    """The SDK catches httpx2's errors: a give-up mid-body is httpx2.RemoteProtocolError
    (what it sees when its own stream breaks), our typed error its ``__cause__``."""
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=3)})
    body = {"model": "ref", "messages": MESSAGES, "max_tokens": N, "stream": True}
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with httpx2.AsyncClient(transport=Httpx2Transport(transport(max_attempts=1))) as c:
            got: list[bytes] = []
            with pytest.raises(httpx2.RemoteProtocolError) as info:
                async with c.stream("POST", srv.url + "/v1/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    async for part in r.aiter_raw():
                        got.append(part)
        assert srv.stats.requests == 1
    cause = info.value.__cause__
    assert isinstance(cause, IncompleteStreamError) and isinstance(cause.error, AttemptsExhausted)
    assert cause.delivered == len(b"".join(got)) > 0
    assert info.value.request.url == srv.url + "/v1/chat/completions"


async def test_an_unreachable_server_is_an_httpx2_connect_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with httpx2.AsyncClient(transport=Httpx2Transport(transport(max_attempts=2))) as c:
        with pytest.raises(httpx2.TransportError) as info:
            await c.get(f"http://127.0.0.1:{port}/api/tags")
    cause = info.value.__cause__
    assert isinstance(cause, httpx.TransportError)
    # the httpx2 class named like the nearest httpx class of ours
    assert any(type(info.value).__name__ == c.__name__ for c in type(cause).__mro__)


async def test_a_streamed_upload_and_the_answer_pass_through_untouched() -> None:
    """A body the SDK has not read (an upload stream) reaches the server as sent; the
    answer's bytes are the server's."""
    parts = [b'{"model": "ref", ', b'"prompt": "Hi", "stream": false, ', b'"raw": true}']

    async def upload() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    async with ReferenceServer(stop_probability=0.0) as srv:
        async with httpx2.AsyncClient() as plain:
            want = await plain.post(srv.url + "/api/generate", content=b"".join(parts))
        async with httpx2.AsyncClient(transport=Httpx2Transport(transport())) as c:
            got = await c.post(srv.url + "/api/generate", content=upload())
    assert got.status_code == want.status_code == 200
    assert got.json()["response"] == want.json()["response"] and got.json()["done"]


async def test_a_sync_upload_stream_passes_through() -> None:
    def upload() -> Iterator[bytes]:
        yield b'{"model": "ref", "prompt": "Hi", "stream": false}'

    def post(url: str) -> httpx2.Response:
        sync = ResilientSyncTransport(config=StreamConfig(**FAST))
        with httpx2.Client(transport=Httpx2SyncTransport(sync)) as c:
            return c.post(url + "/api/generate", content=upload())

    async with ReferenceServer(stop_probability=0.0) as srv:
        r = await asyncio.to_thread(post, srv.url)
    assert r.status_code == 200 and r.json()["done"] is True and r.json()["response"]
