"""ResilientTransport under the official SDKs (ollama, openai) over real sockets.

The SDKs are used as their users use them, with one transport line added; the
reference server injects faults (and the chaos proxy breaks the network), and the
text the SDK yields equals an unbroken run byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from support.sdk_calls import FAST, MESSAGES, PROMPT, N

from resilient_stream import StreamConfig
from resilient_stream.chaos import ChaosProxy
from resilient_stream.errors import AttemptsExhausted, IncompleteStreamError
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer
from resilient_stream.sdk import ResilientTransport
from resilient_stream.transport import MultiplexedTransport

pytestmark = pytest.mark.timeout(60)


def transport(http2: bool = True, **inner: Any) -> ResilientTransport:
    config = StreamConfig(http2=http2, **FAST)
    return ResilientTransport(config=config, **inner)


# --- what the SDKs yield -------------------------------------------------------------


async def ollama_text(url: str, kind: str, t: httpx.AsyncBaseTransport | None) -> str:
    client = ollama.AsyncClient(host=url, transport=t) if t else ollama.AsyncClient(host=url)
    options = {"num_predict": N, "temperature": 0}
    out: list[str] = []
    try:
        if kind == "chat":
            parts = await client.chat(model="ref", messages=MESSAGES, stream=True, options=options)
            async for part in parts:
                out.append(part.message.content or "")
            assert part.done and part.eval_count == N
        else:
            gen = await client.generate(model="ref", prompt=PROMPT, stream=True, options=options)
            async for g in gen:
                out.append(g.response)
            assert g.done and g.eval_count == N
    finally:
        await client._client.aclose()
    return "".join(out)


def openai_client(url: str, t: httpx.AsyncBaseTransport | None) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=t) if t else httpx.AsyncClient()
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", http_client=http, max_retries=0)


async def openai_text(url: str, kind: str, t: httpx.AsyncBaseTransport | None) -> str:
    client = openai_client(url, t)
    out: list[str] = []
    usage: Any = None
    try:
        if kind == "chat":
            chat = await client.chat.completions.create(
                model="ref",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=N,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            ids, roles, finishes = set(), 0, 0
            async for c in chat:
                ids.add(c.id)
                usage = c.usage or usage
                for choice in c.choices:
                    roles += choice.delta.role is not None
                    finishes += choice.finish_reason is not None
                    out.append(choice.delta.content or "")
            assert len(ids) == 1 and roles == 1 and finishes == 1
        else:
            comp = await client.completions.create(
                model="ref",
                prompt=PROMPT,
                max_tokens=N,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for k in comp:
                usage = k.usage or usage
                out.extend(choice.text for choice in k.choices)
    finally:
        await client.close()
    assert usage is not None and usage.completion_tokens == N
    return "".join(out)


SDKS = {"ollama": ollama_text, "openai": openai_text}
CASES = [
    (sdk, kind)
    for sdk in SDKS
    for kind in ("chat", "generate" if sdk == "ollama" else "completions")
]


@pytest.fixture
async def baseline() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


async def unbroken(srv: ReferenceServer, sdk: str, kind: str) -> str:
    return await SDKS[sdk](srv.url, kind, None)  # the SDK on stock httpx


# --- resume under the SDK --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop_connection", "reset_stream", "truncate_line", "stall"])
@pytest.mark.parametrize(("sdk", "kind"), CASES)
@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_sdk_stream_resumes_byte_identical_after_server_fault(
    baseline: ReferenceServer, sdk: str, kind: str, fault: str, http2: bool
) -> None:
    expected = await unbroken(baseline, sdk, kind)
    plan = FaultSchedule({0: Fault(fault, after_tokens=5)})  # type: ignore[arg-type]
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport(http2) as t:
            text = await SDKS[sdk](srv.url, kind, t)
        assert srv.stats.requests == 2
    assert text == expected


@pytest.mark.parametrize("after", [64, 150])
async def test_a_long_answer_broken_after_many_records_resumes_byte_identical(
    baseline: ReferenceServer, after: int
) -> None:
    # The pass-through keeps its forwarded reads joined FOLD (64) at a time; the
    # replay the engine decodes must be those bytes exactly, at a fold and between two
    async def text(url: str, t: httpx.AsyncBaseTransport | None) -> tuple[str, int]:
        client = ollama.AsyncClient(host=url, transport=t) if t else ollama.AsyncClient(host=url)
        options = {"num_predict": 200, "temperature": 0}
        out: list[str] = []
        try:
            gen = await client.generate(model="ref", prompt=PROMPT, stream=True, options=options)
            async for g in gen:
                out.append(g.response)
        finally:
            await client._client.aclose()
        assert g.done
        return "".join(out), g.eval_count or 0

    expected = await text(baseline.url, None)
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=after)})
    # paced: a read per record or so, so that the reads before the fault pass a fold
    async with ReferenceServer(stop_probability=0.0, faults=plan, tokens_per_second=400) as srv:
        async with transport() as t:
            got = await text(srv.url, t)
        assert srv.stats.requests == 2
    assert got == expected and expected[1] == 200


@pytest.mark.parametrize("fault", ["error_line", "truncate"])
@pytest.mark.parametrize(("sdk", "kind"), CASES)
async def test_pass_through_hands_an_error_record_or_a_cut_body_to_the_engine(
    baseline: ReferenceServer, sdk: str, kind: str, fault: str
) -> None:
    """An error record mid-stream is never forwarded (the SDK would raise on it): the
    engine judges it from the replay and resumes; so is a body cut without its end."""
    expected = await unbroken(baseline, sdk, kind)
    plan = FaultSchedule({0: Fault(fault, after_tokens=7)})  # type: ignore[arg-type]
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport() as t:
            text = await SDKS[sdk](srv.url, kind, t)
        assert srv.stats.requests == 2
    assert text == expected


@pytest.mark.parametrize(("sdk", "kind"), CASES)
async def test_sdk_stream_through_chaos_proxy_is_byte_identical(
    baseline: ReferenceServer, sdk: str, kind: str
) -> None:
    expected = await unbroken(baseline, sdk, kind)
    toxics = [
        "reset_stream:probability=1.0,min_bytes=300,max_bytes=1500,max_streams=1",
        "slicer:average_size=40,size_variation=30",
    ]
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with ChaosProxy(upstream=f"127.0.0.1:{srv.port}", toxics=toxics, seed=7) as proxy:
            async with transport() as t:
                text = await SDKS[sdk](proxy.url, kind, t)
            kinds = {f.kind for f in proxy.faults}
        assert srv.stats.requests == 2
    assert "reset_stream" in kinds
    assert text == expected


async def test_retry_before_output_is_invisible_to_the_sdk(baseline: ReferenceServer) -> None:
    expected = await unbroken(baseline, "openai", "chat")
    plan = FaultSchedule({0: Fault("status", status=503, retry_after=0.05)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport() as t:
            text = await openai_text(srv.url, "chat", t)
        assert srv.stats.requests == 2
    assert text == expected


# --- pass-through ------------------------------------------------------------------------


class Recording(httpx.AsyncBaseTransport):
    """Records every response body as it came from the network."""

    def __init__(self) -> None:
        self.inner = MultiplexedTransport(StreamConfig(**FAST))
        self.bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = bytearray()
        self.bodies.append(body)
        inner = response.stream
        assert isinstance(inner, httpx.AsyncByteStream)

        class Copy(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for data in inner:
                    body.extend(data)
                    yield data

            async def aclose(self) -> None:
                await inner.aclose()

        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=Copy(),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "ref", "messages": MESSAGES, "options": {"num_predict": N}}),
        ("/api/generate", {"model": "ref", "prompt": PROMPT, "options": {"num_predict": N}}),
        (
            "/v1/chat/completions",
            {
                "model": "ref",
                "messages": MESSAGES,
                "max_tokens": N,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        ("/v1/completions", {"model": "ref", "prompt": PROMPT, "max_tokens": N, "stream": True}),
    ],
)
async def test_unbroken_stream_passes_the_servers_bytes_untouched(
    baseline: ReferenceServer, path: str, body: dict[str, Any]
) -> None:
    recording = Recording()
    async with ResilientTransport(recording, config=StreamConfig(**FAST)) as t:
        async with httpx.AsyncClient(transport=t) as http:
            async with http.stream("POST", baseline.url + path, json=body) as response:
                assert response.status_code == 200
                got = b"".join([data async for data in response.aiter_raw()])
    (upstream,) = recording.bodies
    assert got == bytes(upstream)
    assert got.count(b"\n") > N // 2


async def test_unrecognised_requests_pass_through(baseline: ReferenceServer) -> None:
    async with transport() as t:
        client = ollama.AsyncClient(host=baseline.url, transport=t)
        listed = await client.list()
        assert listed.models is not None
        await client._client.aclose()
    assert baseline.stats.requests == 1


# --- non-streaming calls, upgraded -------------------------------------------------------


async def non_streaming_text(
    url: str, sdk: str, kind: str, t: httpx.AsyncBaseTransport | None
) -> str:
    """The one-body answer, its shape checked as the SDK parsed it."""
    options = {"num_predict": N, "temperature": 0}
    if sdk == "ollama":
        client = ollama.AsyncClient(host=url, transport=t) if t else ollama.AsyncClient(host=url)
        try:
            if kind == "chat":
                answer = await client.chat(model="ref", messages=MESSAGES, options=options)
                assert answer.done and answer.eval_count == N
                assert answer.message.role == "assistant"
                return answer.message.content or ""
            gen = await client.generate(model="ref", prompt=PROMPT, options=options)
            assert gen.done and gen.eval_count == N and gen.done_reason == "length"
            return gen.response
        finally:
            await client._client.aclose()
    oa = openai_client(url, t)
    try:
        if kind == "chat":
            done = await oa.chat.completions.create(
                model="ref",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=N,
                temperature=0,
            )
            assert done.object == "chat.completion" and done.choices[0].finish_reason == "length"
            assert done.usage is not None and done.usage.completion_tokens == N
            return done.choices[0].message.content or ""
        comp = await oa.completions.create(model="ref", prompt=PROMPT, max_tokens=N, temperature=0)
        assert comp.object == "text_completion"
        assert comp.usage is not None and comp.usage.completion_tokens == N
        return comp.choices[0].text
    finally:
        await oa.close()


@pytest.mark.parametrize(("sdk", "kind"), CASES)
async def test_non_streaming_call_is_upgraded_and_resumed(
    baseline: ReferenceServer, sdk: str, kind: str
) -> None:
    """``stream`` false is streamed below the SDK, so a long answer resumes (two requests),
    and the SDK gets the one JSON body it parses, equal to the server's own."""
    expected = await non_streaming_text(baseline.url, sdk, kind, None)
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=5)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport() as t:
            text = await non_streaming_text(srv.url, sdk, kind, t)
        assert srv.stats.requests == 2
    assert text == expected and len(text) > N


async def test_upgrade_off_passes_non_streaming_calls_through() -> None:
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=5)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        config = StreamConfig(**FAST)
        async with ResilientTransport(config=config, upgrade_non_streaming=False) as t:
            with pytest.raises(httpx.TransportError):
                await non_streaming_text(srv.url, "ollama", "generate", t)
        assert srv.stats.requests == 1  # sent as the SDK wrote it, not resumed


# --- errors and closing ------------------------------------------------------------------


async def test_missing_model_is_the_sdks_usual_error(baseline: ReferenceServer) -> None:
    async with transport() as t:
        client = ollama.AsyncClient(host=baseline.url, transport=t)
        with pytest.raises(ollama.ResponseError) as info:
            async for _ in await client.chat(model="missing-x", messages=MESSAGES, stream=True):
                pass
        assert info.value.status_code == 404
        assert "not found" in info.value.error
        await client._client.aclose()  # closes the transport too (httpx clients own theirs)
    async with transport() as t:
        oa = openai_client(baseline.url, t)
        with pytest.raises(openai.NotFoundError):
            await oa.chat.completions.create(
                model="missing-x",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
        await oa.close()


async def test_unreachable_server_raises_a_transport_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = StreamConfig(**{**FAST, "max_attempts": 2})
    async with ResilientTransport(config=config) as t:
        oa = openai_client(f"http://127.0.0.1:{port}", t)
        with pytest.raises(openai.APIConnectionError):
            await oa.chat.completions.create(
                model="ref",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
        await oa.close()


async def openai_stream(client: openai.AsyncOpenAI, got: list[str]) -> None:
    chat = await client.chat.completions.create(
        model="ref",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=N,
        temperature=0,
        stream=True,
    )
    async for c in chat:
        got.extend(choice.delta.content or "" for choice in c.choices)


async def test_permanent_error_event_mid_stream_is_the_sdks_own_error() -> None:
    """An error naming a bad request after output is not resumed: the SDK reads the
    error record itself and raises its own error (one request; the text before kept)."""
    plan = FaultSchedule({0: Fault("error_line", after_tokens=3, message="invalid option")})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport() as t:
            oa = openai_client(srv.url, t)
            got: list[str] = []
            with pytest.raises(openai.APIError) as info:
                await openai_stream(oa, got)
            await oa.close()
        assert srv.stats.requests == 1
    assert "invalid option" in info.value.message
    assert not isinstance(info.value, openai.APIConnectionError)
    assert len([g for g in got if g]) == 3


async def test_retryable_error_event_mid_stream_is_still_resumed(
    baseline: ReferenceServer,
) -> None:
    expected = await unbroken(baseline, "openai", "chat")
    plan = FaultSchedule({0: Fault("error_line", after_tokens=3, message="runner died")})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport() as t:
            text = await openai_text(srv.url, "chat", t)
        assert srv.stats.requests == 2
    assert text == expected


@pytest.mark.parametrize("sdk", ["ollama", "openai"])
async def test_giving_up_after_output_is_an_httpx_error_carrying_the_give_up(sdk: str) -> None:
    """A give-up after output is the httpx error the SDK sees when its own stream
    breaks (``except httpx.HTTPError`` catches it; openai wraps it in its connection
    error, as it wraps httpx's); the typed give-up is its cause."""
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=3)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with ResilientTransport(config=StreamConfig(**{**FAST, "max_attempts": 1})) as t:
            got: list[str] = []
            broken = openai.APIConnectionError if sdk == "openai" else httpx.RemoteProtocolError
            with pytest.raises(broken) as info:
                if sdk == "openai":
                    oa = openai_client(srv.url, t)
                    try:
                        await openai_stream(oa, got)
                    finally:
                        await oa.close()
                else:
                    client = ollama.AsyncClient(host=srv.url, transport=t)
                    parts = await client.generate(
                        model="ref", prompt=PROMPT, stream=True, options={"num_predict": N}
                    )
                    async for g in parts:
                        got.append(g.response)
        assert srv.stats.requests == 1
    err = info.value.__cause__ if sdk == "openai" else info.value
    assert isinstance(err, IncompleteStreamError) and isinstance(err, httpx.TransportError)
    assert isinstance(err.error, AttemptsExhausted) and err.__cause__ is err.error
    assert err.delivered > 0 and f"after {err.delivered} body bytes" in str(err)
    assert len([g for g in got if g]) == 3


@pytest.mark.reference_server(tokens_per_second=50, stop_probability=0.0)
async def test_closing_the_sdk_stream_early_cancels_upstream(
    reference_server: ReferenceServer,
) -> None:
    srv = reference_server
    async with transport() as t:
        client = ollama.AsyncClient(host=srv.url, transport=t)
        parts = await client.generate(
            model="ref", prompt=PROMPT, stream=True, options={"num_predict": 1000}
        )
        got = 0
        async for _ in parts:
            got += 1
            if got == 3:
                break
        await parts.aclose()  # type: ignore[attr-defined]
        while srv.stats.streams_cancelled_by_client < 1:  # noqa: ASYNC110 (a counter)
            await asyncio.sleep(0.01)
        await client._client.aclose()
    assert srv.stats.streams_completed == 0
    assert srv.stats.tokens_generated < 1000


@pytest.mark.parametrize("inner", ["ours", "stock httpx"])
@pytest.mark.reference_server(tokens_per_second=200, stop_probability=0.0)
async def test_an_sdk_slower_than_the_idle_limit_is_not_a_stall(
    reference_server: ReferenceServer, inner: str
) -> None:
    """The SDK holds every read longer than the idle limit while the server goes on:
    what arrived meanwhile is read without a wait, on our transport (its stream is
    asked) and on any other (through httpx, under the watchdog): one request, the
    server's bytes, no resume."""
    config = StreamConfig(adaptive_idle_timeout=False, idle_timeout=0.3, http2=False)
    wrapped = MultiplexedTransport(config) if inner == "ours" else httpx.AsyncHTTPTransport()
    body = {"model": "ref", "prompt": PROMPT, "raw": True, "options": {"num_predict": 8}}
    reads = 0
    async with ResilientTransport(wrapped, config=config) as t:
        async with httpx.AsyncClient(transport=t) as http:
            url = reference_server.url + "/api/generate"
            async with http.stream("POST", url, json=body) as response:
                assert response.status_code == 200
                got = []
                async for data in response.aiter_raw():
                    got.append(data)
                    reads += 1
                    if reads <= 10:  # bounded
                        await asyncio.sleep(0.4)  # longer than the idle limit
    lines = b"".join(got).splitlines()
    assert len(lines) == 9 and b'"done":true' in lines[-1]
    assert reference_server.stats.requests == 1  # no resume, no retry
