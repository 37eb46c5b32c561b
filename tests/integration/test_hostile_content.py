"""No prompt or model output in messages and logs unless ``log_content`` (issue 10, item 5),
and a web page where an API should be is said in one line (item 15's library side).

Real sockets: a scripted HTTP/1.1 server on 127.0.0.1 answers like servers that echo
the request in their error bodies, or like a web server at the wrong URL.
"""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs
from support.scripted_server import Reply, Request, ScriptedServer

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.errors import HTTPStatusError, MalformedChunkError, StreamError

pytestmark = pytest.mark.timeout(30)

CFG = StreamConfig(
    http2=False, backoff_initial=0.01, backoff_max=0.02, idle_timeout=2.0, max_attempts=3
)
SECRET = "SECRET-PROMPT-4711"
PAGE = b"<!DOCTYPE html><html><body>" + b"<p>Welcome to nginx! " * 400 + b"</body></html>"


async def echoes_the_request(request: Request, reply: Reply) -> None:
    prompt = json.loads(request.body)["prompt"]
    body = json.dumps({"error": f"invalid options in request: {{'prompt': {prompt!r}}}"})
    await reply.respond(400, body.encode())


async def output_then_a_broken_line(request: Request, reply: Reply) -> None:
    await reply.start()
    await reply.send(b'{"response": "ok "}\n')
    await reply.send(b'{"response": "SECRET-OUTPUT-0815 and then the line breaks\n')
    await reply.end()


@pytest.mark.parametrize("log_content", [False, True])
async def test_an_error_body_that_echoes_the_prompt_stays_out_of_messages_and_logs(
    log_content: bool,
) -> None:
    cfg = CFG.replace(log_content=log_content)
    async with ScriptedServer(echoes_the_request) as srv, StreamClient(srv.url, config=cfg) as c:
        with capture_logs() as logs, pytest.raises(HTTPStatusError) as info:
            await c.generate(model="m", prompt=SECRET).collect()
    error = info.value
    assert error.status_code == 400 and SECRET in error.body  # the caller can still read it
    assert "bad request" in str(error) and "characters" in str(error)  # the shape
    assert (SECRET in str(error)) == log_content
    assert (SECRET in repr(logs)) == log_content
    assert [e["event"] for e in logs] == ["stream.give_up"]


@pytest.mark.parametrize("log_content", [False, True])
async def test_a_malformed_line_of_model_output_stays_out_of_messages_and_logs(
    log_content: bool,
) -> None:
    cfg = CFG.replace(log_content=log_content)
    async with ScriptedServer(output_then_a_broken_line) as srv:
        async with StreamClient(srv.url, config=cfg) as client:
            stream = client.generate(model="m", prompt="p", raw=True)
            with capture_logs() as logs, pytest.raises(StreamError) as info:
                await stream.collect()
    assert isinstance(info.value.__cause__, MalformedChunkError) or isinstance(
        info.value, MalformedChunkError
    )
    outcomes = " ".join(r.outcome for r in stream.result.history)
    assert "malformed NDJSON chunk" in outcomes and "bytes" in outcomes  # shape, position
    secret = "SECRET-OUTPUT-0815"
    assert len(logs) >= 2  # resumes and the give-up were logged
    assert (secret in repr(logs)) == log_content
    assert (secret in str(info.value)) == log_content
    assert (secret in outcomes) == log_content


async def test_an_html_error_page_is_named_not_dumped() -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.respond(404, PAGE, {"content-type": "text/html; charset=utf-8"})

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        with pytest.raises(HTTPStatusError) as info:
            await client.generate(model="m", prompt="p").collect()
    message = str(info.value)
    assert "not an Ollama/OpenAI API: the server answered text/html" in message
    assert "nginx" not in message and len(message) < 400


async def test_an_html_page_with_status_200_fails_at_once_instead_of_retrying() -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.respond(200, PAGE + b"\n", {"content-type": "text/html"})

    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=CFG) as client:
        with pytest.raises(MalformedChunkError) as info:
            await client.generate(model="m", prompt="p").collect()
    assert "not an Ollama/OpenAI API" in str(info.value) and "check the URL" in str(info.value)
    assert "nginx" not in str(info.value)
    assert len(srv.requests) == 1  # a web page will not become an API by retrying
