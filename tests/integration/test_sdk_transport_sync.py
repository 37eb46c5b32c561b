"""ResilientSyncTransport under the sync SDKs (ollama.Client, openai.OpenAI, httpx.Client).

The reference server runs on the test's event loop; the sync SDK runs in a worker
thread (``asyncio.to_thread``), as a sync program would run it, and the transport
runs the resume engine on its own loop thread. Text is compared byte for byte with
an unbroken run of the same SDK on stock httpx.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from support.sdk_calls import FAST, MESSAGES, PROMPT, N

from resilient_stream import ResilientSyncTransport, StreamConfig, StreamResult
from resilient_stream.chaos import ChaosProxy
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer

pytestmark = pytest.mark.timeout(60)

OPTIONS = {"num_predict": N, "temperature": 0}


def transport(http2: bool = False, **config: Any) -> ResilientSyncTransport:
    return ResilientSyncTransport(config=StreamConfig(http2=http2, **{**FAST, **config}))


# --- what the sync SDKs yield (run in a worker thread) ----------------------------------


def ollama_text(url: str, kind: str, t: httpx.BaseTransport | None, stream: bool = True) -> str:
    client = ollama.Client(host=url, transport=t) if t else ollama.Client(host=url)
    try:
        if kind == "chat":
            if not stream:
                answer = client.chat(model="ref", messages=MESSAGES, options=OPTIONS)
                assert answer.done and answer.eval_count == N
                return answer.message.content or ""
            out = []
            for part in client.chat(model="ref", messages=MESSAGES, stream=True, options=OPTIONS):
                out.append(part.message.content or "")
            assert part.done and part.eval_count == N
            return "".join(out)
        if not stream:
            gen = client.generate(model="ref", prompt=PROMPT, options=OPTIONS)
            assert gen.done and gen.eval_count == N
            return gen.response
        out = []
        for g in client.generate(model="ref", prompt=PROMPT, stream=True, options=OPTIONS):
            out.append(g.response)
        assert g.done and g.eval_count == N
        return "".join(out)
    finally:
        client._client.close()


def openai_text(url: str, kind: str, t: httpx.BaseTransport | None, stream: bool = True) -> str:
    http = httpx.Client(transport=t) if t else httpx.Client()
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", http_client=http, max_retries=0)
    try:
        if kind == "chat":
            args: dict[str, Any] = dict(model="ref", messages=MESSAGES, max_tokens=N, temperature=0)
            if not stream:
                done = client.chat.completions.create(**args)
                assert done.object == "chat.completion"
                assert done.usage is not None and done.usage.completion_tokens == N
                return done.choices[0].message.content or ""
            out, ids, roles, finishes, usage = [], set(), 0, 0, None
            chunks = client.chat.completions.create(
                **args, stream=True, stream_options={"include_usage": True}
            )
            for c in chunks:
                ids.add(c.id)
                usage = c.usage or usage
                for choice in c.choices:
                    roles += choice.delta.role is not None
                    finishes += choice.finish_reason is not None
                    out.append(choice.delta.content or "")
            assert len(ids) == 1 and roles == 1 and finishes == 1
            assert usage is not None and usage.completion_tokens == N
            return "".join(out)
        cargs: dict[str, Any] = dict(model="ref", prompt=PROMPT, max_tokens=N, temperature=0)
        if not stream:
            comp = client.completions.create(**cargs)
            assert comp.object == "text_completion"
            assert comp.usage is not None and comp.usage.completion_tokens == N
            return comp.choices[0].text
        out, usage = [], None
        for k in client.completions.create(
            **cargs, stream=True, stream_options={"include_usage": True}
        ):
            usage = k.usage or usage
            out.extend(choice.text for choice in k.choices)
        assert usage is not None and usage.completion_tokens == N
        return "".join(out)
    finally:
        client.close()


SDKS = {"ollama": ollama_text, "openai": openai_text}
CASES = [("ollama", "chat"), ("ollama", "generate"), ("openai", "chat"), ("openai", "completions")]


async def run(sdk: str, url: str, kind: str, t: httpx.BaseTransport | None, stream: bool) -> str:
    return await asyncio.to_thread(SDKS[sdk], url, kind, t, stream)


@pytest.fixture
async def baseline() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


# --- resume under the sync SDKs -----------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop_connection", "truncate_line", "stall"])
@pytest.mark.parametrize(("sdk", "kind"), CASES)
async def test_sync_sdk_stream_resumes_byte_identical_after_server_fault(
    baseline: ReferenceServer, sdk: str, kind: str, fault: str
) -> None:
    expected = await run(sdk, baseline.url, kind, None, True)
    plan = FaultSchedule({0: Fault(fault, after_tokens=5)})  # type: ignore[arg-type]
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        t = transport()
        text = await run(sdk, srv.url, kind, t, True)
        assert srv.stats.requests == 2
    assert text == expected


@pytest.mark.parametrize(("sdk", "kind"), CASES)
async def test_sync_non_streaming_call_is_upgraded_and_resumed(
    baseline: ReferenceServer, sdk: str, kind: str
) -> None:
    """``stream`` false: streamed below the SDK (so the fault is resumed: two requests)
    and answered as the one JSON body the SDK parses (shape asserted by the helpers)."""
    expected = await run(sdk, baseline.url, kind, None, False)
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=5)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        text = await run(sdk, srv.url, kind, transport(), False)
        assert srv.stats.requests == 2
    assert text == expected
    assert len(text) > N


@pytest.mark.parametrize(("sdk", "kind"), CASES)
async def test_sync_sdk_through_chaos_proxy_is_byte_identical(
    baseline: ReferenceServer, sdk: str, kind: str
) -> None:
    expected = await run(sdk, baseline.url, kind, None, True)
    toxics = [
        "reset_stream:probability=1.0,min_bytes=300,max_bytes=1500,max_streams=1",
        "slicer:average_size=40,size_variation=30",
    ]
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with ChaosProxy(upstream=f"127.0.0.1:{srv.port}", toxics=toxics, seed=7) as proxy:
            text = await run(sdk, proxy.url, kind, transport(http2=True), True)
            kinds = {f.kind for f in proxy.faults}
        assert srv.stats.requests == 2
    assert "reset_stream" in kinds
    assert text == expected


async def test_on_resumed_tells_the_sync_caller_each_resumed_calls_result(
    baseline: ReferenceServer,
) -> None:
    """What the SDK has no field for: the seams of a resumed call, verified, and an
    unbroken call (passed through) tells nothing."""
    expected = await run("ollama", baseline.url, "generate", None, True)
    results: list[StreamResult] = []
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=5)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:

        def t() -> ResilientSyncTransport:  # each run closes its client's transport
            config = StreamConfig(http2=False, **FAST)
            return ResilientSyncTransport(config=config, on_resumed=results.append)

        text = await run("ollama", srv.url, "generate", t(), True)
        again = await run("ollama", srv.url, "generate", t(), True)  # no fault this time
    assert text == again == expected
    (result,) = results
    assert result.text == expected and result.resumes == 1 and result.verified
    assert result.seams[0].verified and result.eval_count == N


async def test_sync_transport_over_http2_resumes(baseline: ReferenceServer) -> None:
    expected = await run("openai", baseline.url, "chat", None, True)
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=5)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        text = await run("openai", srv.url, "chat", transport(http2=True), True)
        assert srv.stats.requests == 2
    assert text == expected


# --- plain httpx.Client ----------------------------------------------------------------------


def httpx_lines(url: str, t: httpx.BaseTransport) -> list[bytes]:
    body = {"model": "ref", "prompt": PROMPT, "options": OPTIONS}
    with httpx.Client(transport=t) as http:
        with http.stream("POST", url + "/api/generate", json=body) as response:
            assert response.status_code == 200
            return [line for line in response.iter_bytes() if line]


async def test_plain_httpx_client_stream_is_resumed(baseline: ReferenceServer) -> None:
    import json

    def text(chunks: list[bytes]) -> str:
        lines = b"".join(chunks).splitlines()
        return "".join(json.loads(line)["response"] for line in lines)

    expected = text(await asyncio.to_thread(httpx_lines, baseline.url, transport()))
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=7)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        got = text(await asyncio.to_thread(httpx_lines, srv.url, transport()))
        assert srv.stats.requests == 2
    assert got == expected


# --- pass-through, errors, closing ----------------------------------------------------------


async def test_sync_unrecognised_requests_pass_through(baseline: ReferenceServer) -> None:
    def listed() -> int:
        client = ollama.Client(host=baseline.url, transport=transport())
        try:
            return len(client.list().models)
        finally:
            client._client.close()

    assert await asyncio.to_thread(listed) >= 1
    assert baseline.stats.requests == 1


async def test_sync_missing_model_is_the_sdks_usual_error(baseline: ReferenceServer) -> None:
    def chat() -> None:
        client = ollama.Client(host=baseline.url, transport=transport())
        try:
            for _ in client.chat(model="missing-x", messages=MESSAGES, stream=True):
                pass
        finally:
            client._client.close()

    with pytest.raises(ollama.ResponseError) as info:
        await asyncio.to_thread(chat)
    assert info.value.status_code == 404


async def test_sync_unreachable_server_is_the_sdks_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def chat() -> None:
        openai_text(f"http://127.0.0.1:{port}", "chat", transport(max_attempts=2))

    with pytest.raises(openai.APIConnectionError):
        await asyncio.to_thread(chat)


@pytest.mark.reference_server(tokens_per_second=50, stop_probability=0.0)
async def test_sync_closing_the_stream_early_cancels_upstream(
    reference_server: ReferenceServer,
) -> None:
    srv = reference_server

    def three() -> int:
        client = ollama.Client(host=srv.url, transport=transport(http2=True))
        got = 0
        try:
            parts = client.generate(
                model="ref", prompt=PROMPT, stream=True, options={"num_predict": 1000}
            )
            for _ in parts:
                got += 1
                if got == 3:
                    break
            parts.close()  # type: ignore[attr-defined]
        finally:
            client._client.close()
        return got

    assert await asyncio.to_thread(three) == 3
    for _ in range(500):  # bounded: the server sees the cancel within 5 s
        if srv.stats.streams_cancelled_by_client >= 1:
            break
        await asyncio.sleep(0.01)
    assert srv.stats.streams_cancelled_by_client >= 1
    assert srv.stats.streams_completed == 0
    assert srv.stats.tokens_generated < 1000


def test_sync_transport_refuses_a_sync_inner_transport() -> None:
    with pytest.raises(TypeError, match="AsyncBaseTransport"):
        ResilientSyncTransport(httpx.HTTPTransport())  # type: ignore[arg-type]


def test_closed_sync_transport_stops_its_thread() -> None:
    import threading

    before = {t.ident for t in threading.enumerate()}
    t = transport()
    assert len({th.ident for th in threading.enumerate()} - before) == 1
    t.close()
    t.close()  # idempotent
    assert {th.ident for th in threading.enumerate()} - before == set()
    with pytest.raises(RuntimeError, match="closed"):
        t.handle_request(httpx.Request("GET", "http://127.0.0.1:1/"))
