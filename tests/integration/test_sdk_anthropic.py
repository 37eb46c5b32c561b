"""ResilientTransport under the official ``anthropic`` SDK (``/v1/messages``), real sockets.

The SDK is used as its users use it, with one transport line added
(``http_client=httpx.AsyncClient(transport=ResilientTransport())`` for anthropic < 1,
``http_client=httpx2.AsyncClient(transport=Httpx2Transport(ResilientTransport()))``
for 1.0+, which is built on httpx2 and refuses httpx clients); the reference
server's ``/v1/messages`` injects faults (and the chaos proxy breaks the network).
The text the SDK yields equals an unbroken run byte for byte, its event stream is
one message (one ``message_start``, one content block, one ``message_delta`` whose
``output_tokens`` counts every attempt, one ``message_stop``), and its accumulated
message is the first attempt's (id).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import pytest
from support.sdk_calls import FAST, N

from resilient_stream import ResilientSyncTransport, StreamClient, StreamConfig
from resilient_stream.chaos import ChaosProxy
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer
from resilient_stream.refserver.faults import RequestInfo
from resilient_stream.sdk import ResilientTransport

pytestmark = pytest.mark.timeout(60)

MODEL = "claude-ref"
USER = [{"role": "user", "content": "Hi"}]
SYSTEM = "Be brief"
#: How the unbroken answer ends: by ``max_tokens`` after N tokens (no stop), or by
#: ``end_turn`` well inside a large ``max_tokens`` (65 tokens at this stop rate). A
#: resume's delivered tokens are only bounded (Anthropic counts at the end), so with
#: the tight limit the resume starts over (the restart is verified and dropped); with
#: the large one it continues the prefill.
ENDINGS = {"max_tokens": (0.0, N), "end_turn": (0.02, 1000)}


def transport(http2: bool = True) -> ResilientTransport:
    return ResilientTransport(config=StreamConfig(http2=http2, **FAST))


#: anthropic 1.0+ is built on httpx2 (and raises TypeError for an httpx client).
ON_HTTPX2 = int(anthropic.__version__.split(".")[0]) >= 1


def client(url: str, t: httpx.AsyncBaseTransport | None) -> anthropic.AsyncAnthropic:
    """The SDK's async client with the one transport line (``t``; None: stock)."""
    http: Any
    if ON_HTTPX2:
        import httpx2

        from resilient_stream.sdk import Httpx2Transport

        http = httpx2.AsyncClient(transport=Httpx2Transport(t)) if t else httpx2.AsyncClient()
    else:
        http = httpx.AsyncClient(transport=t) if t else httpx.AsyncClient()
    return anthropic.AsyncAnthropic(base_url=url, api_key="x", http_client=http, max_retries=0)


def read_errors() -> tuple[type[Exception], ...]:
    """What a failed body read raises under the SDK (its httpx package's HTTPError)."""
    if ON_HTTPX2:
        import httpx2

        return (httpx2.HTTPError,)
    return (httpx.HTTPError,)


def sync_http(t: httpx.BaseTransport) -> Any:
    if ON_HTTPX2:
        import httpx2

        from resilient_stream.sdk import Httpx2SyncTransport

        return httpx2.Client(transport=Httpx2SyncTransport(t))
    return httpx.Client(transport=t)


@dataclass
class Answer:
    text: str
    message: Any
    events: Counter[str] = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)


async def stream_answer(
    url: str, t: httpx.AsyncBaseTransport | None, *, model: str = MODEL, max_tokens: int = N
) -> Answer:
    """``messages.stream``: the SDK's own accumulator checks the events' order."""
    c = client(url, t)
    try:
        async with c.messages.stream(
            model=model,
            max_tokens=max_tokens,
            system=SYSTEM,
            messages=USER,  # type: ignore[arg-type]
        ) as s:
            events: Counter[str] = Counter()
            ids: set[str] = set()
            out: list[str] = []
            async for ev in s:
                events[ev.type] += 1
                if ev.type == "message_start":
                    ids.add(ev.message.id)
                elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                    assert ev.index == 0
                    out.append(ev.delta.text)
            message = await s.get_final_message()
    finally:
        await c.close()
    return Answer("".join(out), message, events, ids)


def well_formed(answer: Answer, expected: Answer, first_id: str | None = None) -> None:
    ev = answer.events
    assert ev["message_start"] == 1 and ev["message_stop"] == 1 and ev["message_delta"] == 1
    assert ev["content_block_start"] == 1 and ev["content_block_stop"] == 1
    assert answer.message.content[0].text == answer.text
    assert answer.message.stop_reason == expected.message.stop_reason
    # Anthropic counts only at the end: the carried text's tokens are an upper bound
    # (its UTF-8 bytes), never fewer than the truth; exact after a start over
    got, truth = answer.message.usage.output_tokens, expected.message.usage.output_tokens
    if expected.message.stop_reason == "max_tokens":
        assert got == truth
    else:
        assert truth <= got <= truth + len(answer.text.encode())
    if first_id is not None:
        assert answer.ids == {first_id}


@pytest.fixture
async def baseline() -> AsyncIterator[ReferenceServer]:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


async def unbroken(srv: ReferenceServer, max_tokens: int = N) -> Answer:
    answer = await stream_answer(srv.url, None, max_tokens=max_tokens)  # stock httpx
    return answer


async def expected_for(ending: str) -> Answer:
    stop, limit = ENDINGS[ending]
    async with ReferenceServer(stop_probability=stop) as srv:
        answer = await unbroken(srv, limit)
    assert answer.message.stop_reason == ending
    return answer


class Recorded:
    """A fault plan that also keeps every request body (to look at the prefills)."""

    def __init__(self, faults: dict[int, Fault]) -> None:
        self.faults = faults
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, info: RequestInfo) -> Fault | None:
        self.bodies.append(info.body)
        return self.faults.get(info.index)


# --- resume under the SDK ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", ["drop_connection", "reset_stream", "truncate_line", "stall", "error_line", "truncate"]
)
@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_messages_stream_resumes_byte_identical_after_server_fault(
    fault: str, http2: bool, ending: str
) -> None:
    expected = await expected_for(ending)
    stop, limit = ENDINGS[ending]
    plan = Recorded({0: Fault(fault, after_tokens=7)})  # type: ignore[arg-type]
    async with ReferenceServer(stop_probability=stop, faults=plan) as srv:
        async with transport(http2) as t:
            got = await stream_answer(srv.url, t, max_tokens=limit)
        requests = srv.stats.requests
    assert got.text == expected.text
    well_formed(got, expected, first_id="msg_ref0")
    resumed = plan.bodies[1]
    if ending == "max_tokens":
        # the prefill asked for fewer tokens than were left (the delivered ones are only
        # bounded) and ended by max_tokens: the stream started over, counted by the
        # server, and the restart was verified and dropped
        assert requests == 3
        assert plan.bodies[2]["messages"] == USER and plan.bodies[2]["max_tokens"] == N
        return
    assert requests == 2
    assert resumed["messages"][:-1] == USER and resumed["messages"][-1]["role"] == "assistant"
    prefill = resumed["messages"][-1]["content"]
    assert prefill and expected.text.startswith(prefill)
    assert resumed["max_tokens"] < limit


async def test_every_break_position_resumes_and_no_prefill_ends_in_whitespace() -> None:
    """A break after each token in turn: every seam, including those where the text
    before the held-back overlap ends with a newline (the API refuses such a prefill,
    the reference server too: the request leaves it out and the continuation's copy
    is dropped exactly)."""
    expected = await expected_for("end_turn")
    stop, limit = ENDINGS["end_turn"]
    prefills: list[str] = []
    for at in range(1, expected.message.usage.output_tokens):
        plan = Recorded({0: Fault("drop_connection", after_tokens=at)})
        async with ReferenceServer(stop_probability=stop, faults=plan) as srv:
            async with transport() as t:
                got = await stream_answer(srv.url, t, max_tokens=limit)
            assert srv.stats.requests == 2, at
        assert got.text == expected.text, at
        well_formed(got, expected)
        last = plan.bodies[1]["messages"][-1]
        if last["role"] == "assistant":
            prefills.append(last["content"])
    assert len(prefills) > 40 and all(p == p.rstrip() for p in prefills)


async def test_messages_stream_through_chaos_proxy_is_byte_identical() -> None:
    expected = await expected_for("end_turn")
    stop, limit = ENDINGS["end_turn"]
    toxics = [
        "reset_stream:probability=1.0,min_bytes=600,max_bytes=2500,max_streams=1",
        "slicer:average_size=40,size_variation=30",
    ]
    async with ReferenceServer(stop_probability=stop) as srv:
        async with ChaosProxy(upstream=f"127.0.0.1:{srv.port}", toxics=toxics, seed=7) as proxy:
            async with transport() as t:
                got = await stream_answer(proxy.url, t, max_tokens=limit)
            kinds = {f.kind for f in proxy.faults}
        assert srv.stats.requests == 2
    assert "reset_stream" in kinds
    assert got.text == expected.text
    well_formed(got, expected, first_id="msg_ref0")


async def test_overloaded_error_event_before_output_is_retried_invisibly(
    baseline: ReferenceServer,
) -> None:
    expected = await unbroken(baseline)
    plan = FaultSchedule({0: Fault("error_line", after_tokens=0, message="Overloaded")})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport() as t:
            got = await stream_answer(srv.url, t)
        assert srv.stats.requests == 2
    assert got.text == expected.text
    well_formed(got, expected, first_id="msg_ref1")


async def test_a_model_without_prefill_is_not_resumed_and_the_sdk_is_told_why() -> None:
    """Claude 4.6 and later refuse a trailing assistant message: no resume is tried, the
    SDK's read fails (an httpx error, which the SDK wraps) with the reason attached."""
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=5)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with transport() as t:
            with pytest.raises((*read_errors(), anthropic.APIError)) as info:
                await stream_answer(srv.url, t, model="claude-opus-4-6")
        assert srv.stats.requests == 1
    chain, exc = [], info.value
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    assert any("prefill" in s for s in chain)


async def test_stream_client_messages_resumes_byte_identical() -> None:
    """The typed path: ``StreamClient.messages`` yields MessageChunks, text identical."""
    expected = await expected_for("end_turn")
    stop, limit = ENDINGS["end_turn"]
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=11)})
    async with ReferenceServer(stop_probability=stop, faults=plan) as srv:
        async with StreamClient(srv.url, config=StreamConfig(**FAST)) as sc:
            stream = sc.messages(model=MODEL, messages=USER, max_tokens=limit, system=SYSTEM)
            result = await stream.collect()
        assert srv.stats.requests == 2
    assert result.text == expected.text
    assert result.resumes == 1 and result.verified
    assert result.done_reason == "end_turn"


# --- pass-through ------------------------------------------------------------------------


async def create_answer(url: str, t: httpx.AsyncBaseTransport | None, limit: int) -> Any:
    c = client(url, t)
    try:
        return await c.messages.create(
            model=MODEL,
            max_tokens=limit,
            system=SYSTEM,
            messages=USER,  # type: ignore[arg-type]
        )
    finally:
        await c.close()


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_non_streaming_create_is_streamed_resumed_and_answered_whole(ending: str) -> None:
    stop, limit = ENDINGS[ending]
    async with ReferenceServer(stop_probability=stop) as srv:
        expected = await create_answer(srv.url, None, limit)
    plan = Recorded({0: Fault("reset_stream", after_tokens=9)})
    async with ReferenceServer(stop_probability=stop, faults=plan) as srv:
        async with transport() as t:
            got = await create_answer(srv.url, t, limit)
    assert all(body["stream"] is True for body in plan.bodies)
    assert len(plan.bodies) >= 2
    assert got.content[0].text == expected.content[0].text
    assert got.id == "msg_ref0" and got.stop_reason == expected.stop_reason == ending
    truth = expected.usage.output_tokens
    assert truth <= got.usage.output_tokens <= truth + len(got.content[0].text.encode())


async def test_unbroken_stream_passes_the_servers_bytes_untouched(
    baseline: ReferenceServer,
) -> None:
    body = {"model": MODEL, "max_tokens": N, "messages": USER, "stream": True}
    async with httpx.AsyncClient() as plain:
        async with plain.stream("POST", baseline.url + "/v1/messages", json=body) as response:
            upstream = b"".join([data async for data in response.aiter_raw()])
    async with transport() as t:
        async with httpx.AsyncClient(transport=t) as http:
            async with http.stream("POST", baseline.url + "/v1/messages", json=body) as response:
                assert response.status_code == 200
                got = b"".join([data async for data in response.aiter_raw()])
    assert got.replace(b"msg_ref1", b"msg_ref0") == upstream  # the server numbers ids
    assert got.count(b"event: content_block_delta") == N


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"messages": [*USER, {"role": "assistant", "content": "Hello\n"}]}, "trailing whitespace"),
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
async def test_reference_server_refuses_what_the_api_refuses(
    baseline: ReferenceServer, change: dict[str, Any], says: str
) -> None:
    c = client(baseline.url, None)
    try:
        with pytest.raises(anthropic.BadRequestError) as info:
            await c.messages.create(
                **{"model": MODEL, "max_tokens": N, "messages": USER, **change}  # type: ignore[arg-type]
            )
    finally:
        await c.close()
    assert info.value.status_code == 400 and says in str(info.value)
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# --- the sync SDK ------------------------------------------------------------------------


def sync_text(url: str, t: httpx.BaseTransport) -> tuple[str, int, Counter[str]]:
    c = anthropic.Anthropic(base_url=url, api_key="x", http_client=sync_http(t), max_retries=0)
    events: Counter[str] = Counter()
    out: list[str] = []
    usage = -1
    try:
        stream = c.messages.create(
            model=MODEL,
            max_tokens=N,
            system=SYSTEM,
            messages=USER,
            stream=True,  # type: ignore[arg-type]
        )
        for ev in stream:
            events[ev.type] += 1
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                out.append(ev.delta.text)
            elif ev.type == "message_delta":
                usage = ev.usage.output_tokens
    finally:
        c.close()
    return "".join(out), usage, events


async def test_sync_client_resumes_byte_identical(baseline: ReferenceServer) -> None:
    expected = await unbroken(baseline)
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=11)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        t = ResilientSyncTransport(config=StreamConfig(http2=False, **FAST))
        try:
            text, usage, events = await asyncio.to_thread(sync_text, srv.url, t)
        finally:
            await asyncio.to_thread(t.close)
        assert srv.stats.requests == 2
    assert text == expected.text
    assert usage == N
    assert events["message_start"] == 1 and events["message_stop"] == 1
