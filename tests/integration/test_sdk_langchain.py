"""LangChain ``ChatOllama`` and ``ChatOpenAI`` resumed by the SDK transports, real sockets.

A LangChain user adds one line: the transport in ``async_client_kwargs`` /
``sync_client_kwargs`` (``ChatOllama``), or an httpx client with it as
``http_async_client`` / ``http_client`` (``ChatOpenAI``). The chaos proxy resets,
stalls or cuts the first response stream on its way from the reference server, and the
text LangChain returns equals the same call's unbroken run on stock httpx, byte for
byte. The same fault without our transport (a bare HTTP/2 transport, which the toxics
act on) breaks the LangChain call: the control that shows these tests can fail.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest

from resilient_stream import StreamConfig
from resilient_stream.chaos import ChaosProxy
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer
from resilient_stream.sdk import ResilientSyncTransport, ResilientTransport
from resilient_stream.transport import MultiplexedTransport

# imported where used: a default-tier run deselects these tests, and should not pay
# LangChain's import (seconds) to do so
MISSING = [m for m in ("langchain_ollama", "langchain_openai") if not importlib.util.find_spec(m)]
pytestmark = [
    pytest.mark.integrations,
    pytest.mark.timeout(60),
    pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} missing: pip install '.[integrations]'"),
]

N = 40
FAST: dict[str, Any] = dict(
    idle_timeout=0.5,
    first_token_timeout=3.0,
    total_timeout=20.0,
    backoff_initial=0.01,
    backoff_max=0.05,
)
MESSAGES = [("system", "Be brief"), ("human", "Hi")]
#: One fault on the first response stream (max_streams=1: the continuation is spared).
FAULTS = {
    "reset": "reset_stream",
    "stall": "stall_stream",  # duration 0: silent until the client gives up
    # half a line, then that stream is reset (closing the connection would give the
    # retry a fresh connection, so a fresh max_streams count: cut again)
    "cut": "cut_data",
}
STREAMED = "probability=1.0,min_bytes=300,max_bytes=1500,max_streams=1"
#: A non-streaming answer is one JSON body of ~470 bytes without a line end in it.
ONE_BODY = "probability=1.0,min_bytes=100,max_bytes=300,max_streams=1,line_aligned=false"


def toxic(fault: str, plain: bool) -> str:
    then = ",then=reset" if fault == "cut" else ""
    return f"{FAULTS[fault]}:{ONE_BODY if plain else STREAMED}{then}"


Transport = httpx.AsyncBaseTransport | httpx.BaseTransport | None


# --- the models, as a LangChain user builds them -----------------------------------------


def chat_ollama(url: str, t: Transport) -> Any:
    """``ChatOllama``; the transport is the one added line (async or sync client)."""
    from langchain_ollama import ChatOllama

    kwargs: dict[str, Any] = {}
    if isinstance(t, httpx.AsyncBaseTransport):
        kwargs["async_client_kwargs"] = {"transport": t}
    elif t is not None:
        kwargs["sync_client_kwargs"] = {"transport": t}
    return ChatOllama(
        model="ref",
        base_url=url,
        num_predict=N,
        temperature=0,
        # bounds the control's stall (a resumed call has its own stall bounds)
        client_kwargs={"timeout": 3.0},
        **kwargs,
    )


def chat_openai(url: str, t: Transport) -> Any:
    """``ChatOpenAI`` on an httpx client of ours (or stock httpx when ``t`` is None)."""
    from langchain_openai import ChatOpenAI

    kwargs: dict[str, Any] = {}
    if isinstance(t, httpx.AsyncBaseTransport):
        kwargs["http_async_client"] = httpx.AsyncClient(transport=t)
    elif t is not None:
        kwargs["http_client"] = httpx.Client(transport=t)
    return ChatOpenAI(
        model="ref",
        base_url=url + "/v1",
        api_key="x",
        max_tokens=N,
        temperature=0,
        max_retries=0,
        timeout=3.0,
        stream_usage=True,
        **kwargs,
    )


async def call(model: Any, mode: str, out: list[str]) -> Any:
    """One LangChain call; the text it yields lands in ``out`` as it comes."""

    def stream() -> Any:
        total: Any = None
        for chunk in model.stream(MESSAGES):
            out.append(chunk.content)
            total = chunk if total is None else total + chunk
        return total

    def invoke() -> Any:
        message = model.invoke(MESSAGES)
        out.append(message.content)
        return message

    if mode == "astream":
        total: Any = None
        async for chunk in model.astream(MESSAGES):
            out.append(chunk.content)
            total = chunk if total is None else total + chunk
        return total
    if mode in ("ainvoke", "ainvoke(stream=False)"):
        extra = {"stream": False} if mode != "ainvoke" else {}
        message = await model.ainvoke(MESSAGES, **extra)
        out.append(message.content)
        return message
    # the sync API blocks: off the event loop that runs the server and the proxy
    return await asyncio.to_thread(stream if mode == "stream" else invoke)


#: (model, mode, whether the call on the wire is a non-streaming one)
CASES = [
    ("ChatOllama", "astream", False),
    ("ChatOllama", "ainvoke", False),  # ChatOllama streams underneath
    ("ChatOllama", "ainvoke(stream=False)", True),
    ("ChatOllama", "stream", False),
    ("ChatOllama", "invoke", False),
    ("ChatOpenAI", "astream", False),
    ("ChatOpenAI", "ainvoke", True),  # ChatOpenAI does not stream unless asked
    ("ChatOpenAI", "stream", False),
]
MODELS: dict[str, Callable[[str, Transport], Any]] = {
    "ChatOllama": chat_ollama,
    "ChatOpenAI": chat_openai,
}
SYNC = {"stream", "invoke"}
#: a non-streaming call is resumed because the transport streams it underneath
PARAMS = [pytest.param(m, mode, plain, id=f"{m}-{mode}") for m, mode, plain in CASES]


async def text_of(name: str, mode: str, url: str, t: Transport) -> str:
    out: list[str] = []
    message = await call(MODELS[name](url, t), mode, out)
    if name == "ChatOllama" or mode in ("ainvoke", "invoke"):
        # counts every attempt (ChatOpenAI's streamed usage is left out: LangChain adds
        # up every chunk's usage, so the server's running counts make it 1 + 2 + ... + N)
        assert message.usage_metadata["output_tokens"] == N
    return "".join(out)


#: The reference server's default: a running token count on every chunk/line (as vLLM's
#: continuous usage stats or llama-server's timings), which the resume counts exactly.
SERVER: dict[str, Any] = dict(stop_probability=0.0)


@pytest.fixture
async def baseline() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(**SERVER) as srv:
        yield srv


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(**SERVER) as srv:
        yield srv


def ours(mode: str) -> Any:
    config = StreamConfig(**FAST)
    if mode in SYNC:
        return ResilientSyncTransport(config=config)
    return ResilientTransport(config=config)


def proxy(server: ReferenceServer, fault: str, plain: bool) -> ChaosProxy:
    return ChaosProxy(upstream=f"127.0.0.1:{server.port}", toxics=[toxic(fault, plain)])


async def closing(t: Any, run: Callable[[], Awaitable[str]]) -> str:
    """Run, then close the transport (LangChain never closes the clients it builds)."""
    try:
        return await run()
    finally:
        if isinstance(t, httpx.AsyncBaseTransport):
            await t.aclose()
        else:
            await asyncio.to_thread(t.close)


# --- resumed under LangChain -------------------------------------------------------------


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize(("model", "mode", "plain"), PARAMS)
async def test_langchain_resumes_byte_identical_through_chaos(
    baseline: ReferenceServer,
    server: ReferenceServer,
    model: str,
    mode: str,
    plain: bool,
    fault: str,
) -> None:
    expected = await text_of(model, mode, baseline.url, None)  # stock httpx, no fault
    async with proxy(server, fault, plain) as chaos:
        t = ours(mode)
        text = await closing(t, lambda: text_of(model, mode, chaos.url, t))
        hit = [f.kind for f in chaos.faults]
    assert FAULTS[fault] in hit
    assert text == expected
    assert server.stats.requests == 2  # the broken stream and its continuation


# --- the control: the same fault, no resume ------------------------------------------------


def bare(mode: str) -> Any:
    """HTTP/2 without resume (the chaos proxy's stream toxics act on HTTP/2 only)."""
    if mode in SYNC:
        return httpx.HTTPTransport(http1=False, http2=True)
    return MultiplexedTransport(StreamConfig(**FAST))


def broken_by(model: str) -> tuple[type[BaseException], ...]:
    """ChatOllama lets httpx's error through; ChatOpenAI raises openai's (LangChain's
    subclasses of ``openai.APIConnectionError`` / ``APITimeoutError``)."""
    return (httpx.TransportError,) if model == "ChatOllama" else (openai.APIConnectionError,)


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize(("model", "mode", "plain"), CASES)
async def test_the_same_fault_breaks_langchain_without_our_transport(
    baseline: ReferenceServer,
    server: ReferenceServer,
    model: str,
    mode: str,
    plain: bool,
    fault: str,
) -> None:
    expected = await text_of(model, mode, baseline.url, None)
    out: list[str] = []
    async with proxy(server, fault, plain) as chaos:
        t = bare(mode)

        async def run() -> str:
            with pytest.raises(broken_by(model)):
                await call(MODELS[model](chaos.url, t), mode, out)
            return "".join(out)

        got = await closing(t, run)
        assert FAULTS[fault] in [f.kind for f in chaos.faults]
    assert len(got) < len(expected) and expected.startswith(got)
    assert server.stats.requests == 1  # nobody asked for the rest


# --- servers that count only at the end ----------------------------------------------------


@pytest.mark.parametrize("after", [3, 5, 10, 20])
async def test_resume_is_byte_identical_when_the_server_counts_only_at_the_end(after: int) -> None:
    """Ollama and OpenAI send their token count only at the end, so a resume counts the
    delivered chunks by an upper bound. Found here at 4cfd1cd: the resume asked for too
    few tokens and the text ended short, silently (82 of 155 characters, after=10);
    fixed by 9bd0ff7 (such a resume starts over instead)."""
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=after)})
    async with ReferenceServer(stop_probability=0.0, report_tokens=False) as srv:
        expected = await text_of("ChatOllama", "astream", srv.url, None)
    async with ReferenceServer(stop_probability=0.0, report_tokens=False, faults=plan) as srv:
        async with ResilientTransport(config=StreamConfig(**FAST)) as t:
            text = await text_of("ChatOllama", "astream", srv.url, t)
        assert 2 <= srv.stats.requests <= 3  # resumed, or started over once
    assert text == expected
