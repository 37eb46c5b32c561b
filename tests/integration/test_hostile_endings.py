"""How a stream may end: only a real end is a success (issue 10, items 6 and 7).

Real sockets: a scripted HTTP/1.1 server on 127.0.0.1 writes what hostile or
unusual servers send.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from support.scripted_server import Reply, Request, ScriptedServer

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.errors import OutputLimitError
from resilient_stream.openai import openai_chat

pytestmark = pytest.mark.timeout(30)

# seam_overlap=0: these scripted servers are not continuation-consistent (they answer a
# request by its shape), so the requests carry all of the partial output, as before
# verified seams; seams themselves are tested against the reference server.
CFG = StreamConfig(
    http2=False, backoff_initial=0.01, backoff_max=0.02, idle_timeout=2.0, seam_overlap=0
)


def sse(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"id": "c", "choices": [choice]}).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


async def test_done_marker_without_finish_reason_is_resumed_not_reported_as_success() -> None:
    """llama-cpp-python ends a running stream with [DONE] and no finish_reason when
    another request arrives; that answer is cut short and must be continued."""

    async def handler(request: Request, reply: Reply) -> None:
        messages = json.loads(request.body)["messages"]
        await reply.start(headers={"content-type": "text/event-stream"})
        if messages[-1]["role"] == "user":
            await reply.send(sse("Hel") + sse("lo"))
            await reply.send(DONE)  # cut short: no finish_reason at all
        else:
            assert messages[-1] == {"role": "assistant", "content": "Hello"}
            await reply.send(sse(" world") + sse(None, "stop") + DONE)
        await reply.end()

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        stream = openai_chat(
            client, model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=50
        )
        result = await stream.collect()
    assert result.text == "Hello world"
    assert result.done_reason == "stop"
    assert result.resumes == 1 and len(srv.requests) == 2
    assert "no finish_reason" in result.history[0].outcome


def gen_line(text: str) -> bytes:
    return json.dumps({"response": text}).encode() + b"\n"


class Flood:
    """A server that ignores num_predict and never sends ``done`` (bounded: 200k lines)."""

    def __init__(self) -> None:
        self.sent = 0
        self.finished = False

    async def __call__(self, request: Request, reply: Reply) -> None:
        await reply.start()
        piece = gen_line("x" * 100) * 10
        try:
            for _ in range(20_000):
                await reply.send(piece)
                self.sent += 10
        except ConnectionError:
            return
        self.finished = True
        await reply.end()


async def test_server_ignoring_num_predict_is_stopped_with_a_typed_error() -> None:
    flood = Flood()
    async with ScriptedServer(flood) as srv, StreamClient(srv.url, config=CFG) as client:
        stream = client.generate(model="m", prompt="p", options={"num_predict": 20})
        got = 0
        with pytest.raises(OutputLimitError) as info:
            async for _ in stream:
                got += 1
    assert "20 tokens" in str(info.value) and not info.value.retryable
    assert 20 < got < 20_000  # what came before the stop was delivered
    assert len(srv.requests) == 1  # not retried: it would do it again
    assert not flood.finished  # the client hung up long before the server's 200k lines


async def test_endless_output_without_a_token_limit_stops_at_max_output_bytes() -> None:
    flood = Flood()
    cfg = CFG.replace(max_output_bytes=200_000)
    async with ScriptedServer(flood) as srv, StreamClient(srv.url, config=cfg) as client:
        stream = client.generate(model="m", prompt="p")
        with pytest.raises(OutputLimitError) as info:
            async for _ in stream:
                pass
        partial = stream.result.text
    assert "max_output_bytes=200000" in str(info.value)
    assert 0 < len(partial) <= 200_000
    assert not flood.finished and len(srv.requests) == 1


async def test_sse_body_starting_with_a_bom_split_over_reads_keeps_its_first_event() -> None:
    """Issue 10 item 11: the UTF-8 BOM arrives one byte per read (chunked, paced)."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(headers={"content-type": "text/event-stream"})
        for byte in b"\xef\xbb\xbf":
            await reply.send(bytes([byte]))
            await asyncio.sleep(0.02)
        await reply.send(sse("Hello") + sse(" world") + sse(None, "stop") + DONE)
        await reply.end()

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        stream = openai_chat(client, model="m", messages=[{"role": "user", "content": "hi"}])
        result = await stream.collect()
    assert result.text == "Hello world"
    assert result.attempts == 1
