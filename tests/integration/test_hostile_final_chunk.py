"""Text carried by the final ``done: true`` chunk reaches the aggregate (issue 10, item 1).

Ollama may put the last token in the final chunk; the reference server never
did, so ``collect()``, ``StreamResult.text`` and the drop-in's ``stream=False``
lost it. Real sockets: a scripted HTTP/1.1 server on 127.0.0.1 writes the lines.
"""

from __future__ import annotations

import json

import pytest
from support.scripted_server import Reply, Request, ScriptedServer

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.ollama import AsyncClient

pytestmark = pytest.mark.timeout(30)

# seam_overlap=0: the scripted server answers a request by its shape (not continuation-
# consistent), so requests carry all of the partial output, as before verified seams.
CFG = StreamConfig(
    http2=False, backoff_initial=0.01, backoff_max=0.02, idle_timeout=2.0, seam_overlap=0
)


def line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


async def hello_world(request: Request, reply: Reply) -> None:
    await reply.start()
    if request.path == "/api/chat":
        await reply.send(line({"message": {"role": "assistant", "content": "Hello "}}))
        await reply.send(line({"message": {"role": "assistant", "content": "world"}, "done": True}))
    else:
        await reply.send(line({"response": "Hello "}))
        await reply.send(line({"response": "world", "done": True, "done_reason": "stop"}))
    await reply.end()


async def one_final_chunk(request: Request, reply: Reply) -> None:
    await reply.start()
    await reply.send(
        line({"message": {"role": "assistant", "content": "I don't know."}, "done": True})
    )
    await reply.end()


async def test_generate_collect_keeps_the_text_of_the_final_chunk() -> None:
    async with ScriptedServer(hello_world) as srv, StreamClient(srv.url, config=CFG) as client:
        stream = client.generate(model="m", prompt="p")
        delivered = [c.response async for c in stream]
        result = stream.result
    assert delivered == ["Hello ", "world"]
    assert result.text == "Hello world"
    assert result.done and result.done_reason == "stop"


async def test_chat_of_a_single_final_chunk_keeps_its_content() -> None:
    async with ScriptedServer(one_final_chunk) as srv, StreamClient(srv.url, config=CFG) as c:
        result = await c.chat(model="m", messages=[{"role": "user", "content": "?"}]).collect()
    assert result.text == "I don't know."
    # The server counts nothing: an upper bound (its UTF-8 bytes), and said to be one.
    assert result.eval_count == len("I don't know.") and not result.tokens_exact


async def test_drop_in_non_streaming_keeps_the_text_of_the_final_chunk() -> None:
    # the drop-in is ollama's client on ResilientTransport: stream=False is streamed
    # underneath (and assembled by the transport) only when the upgrade is chosen
    async with ScriptedServer(hello_world) as srv:
        client = AsyncClient(srv.url, config=CFG, upgrade_non_streaming=True)
        try:
            gen = await client.generate(model="m", prompt="p")
            chat = await client.chat(model="m", messages=[{"role": "user", "content": "x"}])
        finally:
            await client.close()
    assert gen.response == "Hello world"
    assert chat.message.content == "Hello world"


async def test_final_chunk_text_after_a_resume_is_joined_once() -> None:
    """First attempt: 'Hello ' then the connection drops; the resume (raw: prompt +
    partial) answers with one final chunk carrying the rest."""

    async def handler(request: Request, reply: Reply) -> None:
        body = json.loads(request.body)
        await reply.start()
        if body["prompt"] == "p":
            await reply.send(line({"response": "Hello "}))
            reply.drop()
            return
        assert body["prompt"] == "pHello "
        await reply.send(line({"response": "world", "done": True, "done_reason": "stop"}))
        await reply.end()

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        result = await client.generate(model="m", prompt="p", raw=True).collect()
    assert result.text == "Hello world"
    assert result.resumes == 1
    assert len(srv.requests) == 2
