"""LiteLLM's ``openai/`` route resumed by the SDK transports, real sockets.

LiteLLM reaches an httpx transport only through the OpenAI client it is handed:
``client=AsyncOpenAI(http_client=httpx.AsyncClient(transport=ResilientTransport()))``
(or ``OpenAI`` with ``ResilientSyncTransport`` for ``litellm.completion``). The chaos
proxy resets, stalls or cuts the first response stream from the reference server; the
text LiteLLM yields equals the same call's unbroken run on stock httpx, byte for byte.
The same fault on a bare HTTP/2 transport (which the toxics act on) breaks both LiteLLM
and the ``openai`` SDK underneath it: the controls that show these tests can fail.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from resilient_stream import StreamConfig
from resilient_stream.chaos import ChaosProxy
from resilient_stream.refserver import ReferenceServer
from resilient_stream.sdk import ResilientSyncTransport, ResilientTransport
from resilient_stream.transport import MultiplexedTransport

pytestmark = [
    pytest.mark.integrations,
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        importlib.util.find_spec("litellm") is None, reason="pip install '.[integrations]'"
    ),
]


def litellm_module() -> Any:
    """litellm, imported when a test runs: importing it costs ~10 s of CPU, which a
    default-tier run that deselects these tests should not pay."""
    # it fetches its model price map over the network at import unless told not to
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return importlib.import_module("litellm")


N = 40
FAST: dict[str, Any] = dict(
    idle_timeout=0.5,
    first_token_timeout=3.0,
    total_timeout=20.0,
    backoff_initial=0.01,
    backoff_max=0.05,
)
MESSAGES = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
PROMPT = "Tell me a story"
#: One fault on the first response stream (max_streams=1: the continuation is spared).
FAULTS = {
    "reset": "reset_stream",
    "stall": "stall_stream",  # duration 0: silent until the client gives up
    # half a line, then that stream is reset (closing the connection would give the
    # retry a fresh connection, so a fresh max_streams count: cut again)
    "cut": "cut_data",
}
STREAMED = "probability=1.0,min_bytes=300,max_bytes=1500,max_streams=1"
#: A non-streaming answer is one JSON body of ~460 bytes without a line end in it.
ONE_BODY = "probability=1.0,min_bytes=100,max_bytes=300,max_streams=1,line_aligned=false"
SYNC = {"completion"}

Transport = httpx.AsyncBaseTransport | httpx.BaseTransport | None


def toxic(fault: str, plain: bool) -> str:
    then = ",then=reset" if fault == "cut" else ""
    return f"{FAULTS[fault]}:{ONE_BODY if plain else STREAMED}{then}"


def proxy(server: ReferenceServer, fault: str, plain: bool) -> ChaosProxy:
    return ChaosProxy(upstream=f"127.0.0.1:{server.port}", toxics=[toxic(fault, plain)])


def openai_client(url: str, t: Transport, sync: bool) -> openai.OpenAI | openai.AsyncOpenAI:
    """The client LiteLLM is handed (stock httpx when ``t`` is None)."""
    common: dict[str, Any] = dict(base_url=url + "/v1", api_key="x", max_retries=0, timeout=3.0)
    if sync:
        http = httpx.Client(transport=t) if t else httpx.Client()  # type: ignore[arg-type]
        return openai.OpenAI(http_client=http, **common)
    ahttp = httpx.AsyncClient(transport=t) if t else httpx.AsyncClient()  # type: ignore[arg-type]
    return openai.AsyncOpenAI(http_client=ahttp, **common)


async def call(call_name: str, stream: bool, url: str, t: Transport, out: list[str]) -> Any:
    """One LiteLLM call as its users write it; the text lands in ``out`` as it comes.
    Returns the usage LiteLLM reported."""
    litellm = litellm_module()
    client = openai_client(url, t, call_name in SYNC)
    kwargs: dict[str, Any] = dict(
        model="openai/ref",
        api_base=url + "/v1",
        api_key="x",
        client=client,
        max_tokens=N,
        temperature=0,
        num_retries=0,
        timeout=3.0,  # litellm's own (600 s by default) overrides the client's
    )
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    try:
        if call_name == "completion":  # sync: off the loop that runs server and proxy
            return await asyncio.to_thread(sync_completion, kwargs, out)
        if call_name == "atext_completion":
            response: Any = await litellm.atext_completion(prompt=PROMPT, **kwargs)
        else:
            response = await litellm.acompletion(messages=MESSAGES, **kwargs)
        if not stream:
            choice = response.choices[0]
            out.append(choice.text if call_name == "atext_completion" else choice.message.content)
            return response.usage
        usage = None
        async for chunk in response:
            usage = getattr(chunk, "usage", None) or usage
            for c in chunk.choices:
                out.append((c.text if call_name == "atext_completion" else c.delta.content) or "")
        return usage
    finally:
        if isinstance(client, openai.AsyncOpenAI):
            await client.close()
        else:
            client.close()


def sync_completion(kwargs: dict[str, Any], out: list[str]) -> Any:
    usage = None
    for chunk in litellm_module().completion(messages=MESSAGES, **kwargs):
        usage = getattr(chunk, "usage", None) or usage
        out.extend(c.delta.content or "" for c in chunk.choices)
    return usage


async def text_of(call_name: str, stream: bool, url: str, t: Transport) -> str:
    out: list[str] = []
    usage = await call(call_name, stream, url, t, out)
    assert usage is not None and usage.completion_tokens == N  # counts every attempt
    return "".join(out)


#: (LiteLLM call, stream=)
CASES = [
    ("acompletion", True),
    ("acompletion", False),
    ("atext_completion", True),
    ("completion", True),
]
#: a non-streaming call is resumed because the transport streams it underneath
PARAMS = [
    pytest.param(name, stream, id=f"{name}-{'stream' if stream else 'plain'}")
    for name, stream in CASES
]


@pytest.fixture
async def baseline() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


def ours(call_name: str) -> Any:
    config = StreamConfig(**FAST)
    if call_name in SYNC:
        return ResilientSyncTransport(config=config)
    return ResilientTransport(config=config)


def bare(call_name: str) -> Any:
    """HTTP/2 without resume (the chaos proxy's stream toxics act on HTTP/2 only)."""
    if call_name in SYNC:
        return httpx.HTTPTransport(http1=False, http2=True)
    return MultiplexedTransport(StreamConfig(**FAST))


async def close(t: Any) -> None:
    """The httpx clients close their transport; closing it again must be harmless too."""
    if isinstance(t, httpx.AsyncBaseTransport):
        await t.aclose()
    else:
        await asyncio.to_thread(t.close)


# --- resumed under LiteLLM ---------------------------------------------------------------


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize(("call_name", "stream"), PARAMS)
async def test_litellm_resumes_byte_identical_through_chaos(
    baseline: ReferenceServer, server: ReferenceServer, call_name: str, stream: bool, fault: str
) -> None:
    expected = await text_of(call_name, stream, baseline.url, None)  # stock httpx, no fault
    async with proxy(server, fault, not stream) as chaos:
        t = ours(call_name)
        try:
            text = await text_of(call_name, stream, chaos.url, t)
        finally:
            await close(t)
        hit = [f.kind for f in chaos.faults]
    assert FAULTS[fault] in hit
    assert text == expected
    assert server.stats.requests == 2  # the broken stream and its continuation


# --- the controls: the same fault, no resume -----------------------------------------------


def litellm_broken() -> tuple[type[BaseException], ...]:
    """What LiteLLM makes of openai's connection error: which one depends on where it
    came (before any output: InternalServerError or APIConnectionError; mid-stream:
    MidStreamFallbackError; a read timeout: Timeout, an openai.APITimeoutError)."""
    litellm = litellm_module()
    return (
        litellm.APIConnectionError,
        litellm.Timeout,
        litellm.InternalServerError,
        litellm.exceptions.MidStreamFallbackError,
    )


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it was raised from, bounded (LiteLLM wraps several times)."""
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize(("call_name", "stream"), CASES)
async def test_the_same_fault_breaks_litellm_without_our_transport(
    baseline: ReferenceServer, server: ReferenceServer, call_name: str, stream: bool, fault: str
) -> None:
    expected = await text_of(call_name, stream, baseline.url, None)
    out: list[str] = []
    async with proxy(server, fault, not stream) as chaos:
        t = bare(call_name)
        try:
            with pytest.raises(litellm_broken()) as info:
                await call(call_name, stream, chaos.url, t, out)
        finally:
            await close(t)
        assert FAULTS[fault] in [f.kind for f in chaos.faults]
    assert any(isinstance(e, openai.APIConnectionError) for e in causes(info.value))
    got = "".join(out)
    assert len(got) < len(expected) and expected.startswith(got)
    assert server.stats.requests == 1  # nobody asked for the rest


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_the_same_fault_breaks_openai_on_a_bare_multiplexed_transport(
    baseline: ReferenceServer, server: ReferenceServer, fault: str
) -> None:
    """The SDK under LiteLLM, alone: MultiplexedTransport carries the stream, not resume."""
    chat: dict[str, Any] = dict(model="ref", messages=MESSAGES, max_tokens=N, temperature=0)
    client = openai_client(baseline.url, None, sync=False)
    assert isinstance(client, openai.AsyncOpenAI)
    async with client:
        expected = "".join(
            [
                c.choices[0].delta.content or ""
                async for c in await client.chat.completions.create(stream=True, **chat)
            ]
        )
    out: list[str] = []
    async with (
        proxy(server, fault, plain=False) as chaos,
        MultiplexedTransport(StreamConfig(**FAST)) as t,
    ):
        client = openai_client(chaos.url, t, sync=False)
        assert isinstance(client, openai.AsyncOpenAI)
        with pytest.raises(openai.APIConnectionError):  # APITimeoutError is one too
            async for c in await client.chat.completions.create(stream=True, **chat):
                out.extend(choice.delta.content or "" for choice in c.choices)
        await client.close()
        assert FAULTS[fault] in [f.kind for f in chaos.faults]
    got = "".join(out)
    assert 0 < len(got) < len(expected) and expected.startswith(got)
    assert server.stats.requests == 1
