"""resilient_stream.ollama.AsyncClient is a drop-in for ollama.AsyncClient.

The official ollama-python async examples (tests/data/ollama_examples: rewritten
without network access and checked against upstream; only the import swapped)
run unchanged in a subprocess against the reference server, with server-side
faults and through the chaos proxy, and print exactly what an unbroken run prints.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
from pathlib import Path
from typing import Any

import ollama
import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.chaos import ChaosProxy
from resilient_stream.formats.ollama.types import ChatChunk, GenerateChunk, Message, ToolCall
from resilient_stream.formats.ollama.types import ToolCallFunction as WireFunction
from resilient_stream.ollama import AsyncClient, ResponseStream
from resilient_stream.ollama._native import ChatResponse as NativeChat
from resilient_stream.ollama._native import GenerateResponse as NativeGenerate
from resilient_stream.ollama._request import parse_host
from resilient_stream.ollama._responses import ResponseFactory
from resilient_stream.ollama.client import default_config
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer, RequestInfo

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).parents[1] / "data" / "ollama_examples"
FAST = StreamConfig(
    idle_timeout=0.5, first_token_timeout=3.0, backoff_initial=0.01, backoff_max=0.05
)
OPTS = {"num_predict": 30}
MSGS = [{"role": "user", "content": "Why is the sky blue?"}]

# The subprocess honours StreamConfig from the environment, like any user program.
FAST_ENV = {
    "RESILIENT_STREAM_IDLE_TIMEOUT": "0.5",
    "RESILIENT_STREAM_FIRST_TOKEN_TIMEOUT": "3",
    "RESILIENT_STREAM_BACKOFF_INITIAL": "0.01",
    "RESILIENT_STREAM_BACKOFF_MAX": "0.05",
}


class Recorder:
    """A fault plan that injects nothing and keeps every request body."""

    def __init__(self) -> None:
        self.requests: list[RequestInfo] = []

    def __call__(self, info: RequestInfo) -> None:
        self.requests.append(info)


async def run_example(name: str, host: str, stdin: str = "", **extra_env: str) -> str:
    env = {**os.environ, "OLLAMA_HOST": host, **FAST_ENV, **extra_env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


# --- the official examples ----------------------------------------------------------

CHAT_STREAM_STDIN = "Why is the sky blue?\nWhat about sunsets?\n"
RUNS = {
    "async-generate.py": "",
    "async-chat.py": "",
    "async-chat-stream.py": CHAT_STREAM_STDIN,
}


async def expected_outputs() -> dict[str, str]:
    """What the examples must print, computed with StreamClient directly."""
    async with ReferenceServer() as srv, StreamClient(srv.url, config=FAST) as c:
        gen = await c.generate(model="gemma3", prompt="Why is the sky blue?").collect()
        chat = await c.chat(model="gemma3", messages=MSGS).collect()
        history: list[dict[str, str]] = []
        turns = []
        for line in CHAT_STREAM_STDIN.splitlines():
            history.append({"role": "user", "content": line})
            r = await c.chat(model="mistral", messages=history).collect()
            history.append({"role": "assistant", "content": r.text})
            turns.append(">>> " + r.text + "\n")
    return {
        "async-generate.py": gen.text + "\n",
        "async-chat.py": chat.text + "\n",
        "async-chat-stream.py": "".join(turns) + ">>> ",
    }


async def run_all(host: str) -> dict[str, str]:
    outs = await asyncio.gather(*(run_example(n, host, s) for n, s in RUNS.items()))
    return dict(zip(RUNS, outs, strict=True))


@pytest.mark.timeout(90)
async def test_official_examples_print_complete_output_despite_faults() -> None:
    expected = await expected_outputs()
    assert all(len(v) > 200 for v in expected.values())

    # Unbroken run.
    async with ReferenceServer() as srv:
        unbroken = await run_all(srv.url)
        unbroken_requests = srv.stats.requests
        # Without ollama's pydantic types (as when the package is not installed).
        native = await run_example(
            "async-chat-stream.py",
            srv.url,
            CHAT_STREAM_STDIN,
            RESILIENT_OLLAMA_NATIVE_TYPES="1",
        )
    assert unbroken == expected
    assert native == expected["async-chat-stream.py"]

    # Server-side faults: every other request breaks mid-answer, each kind once.
    kinds = ["drop_connection", "reset_stream", "truncate_line", "error_line", "stall"]
    issued: list[str] = []

    def faults(info: RequestInfo) -> Fault | None:
        if info.index % 2 or len(issued) == len(kinds):
            return None
        issued.append(kinds[len(issued)])
        return Fault(issued[-1], after_tokens=4 + info.index, message="llama runner process died")

    async with ReferenceServer(faults=faults) as srv:
        faulted = await run_all(srv.url)
        assert len(issued) >= 3
        # Each fault cost exactly one more request: a resume, not a restart.
        assert srv.stats.requests == unbroken_requests + len(issued)
    assert faulted == expected

    # Network faults from the chaos proxy (h2 stream resets, dropped connections, split reads).
    toxics = [
        "reset_stream:probability=1.0,min_bytes=300,max_bytes=3000,max_streams=1",
        "drop_after_data_frames:frames=20,frames_max=50,toxicity=0.5",
        "slicer:average_size=40,size_variation=30",
    ]
    async with ReferenceServer() as srv:
        async with ChaosProxy(upstream=f"127.0.0.1:{srv.port}", toxics=toxics, seed=7) as proxy:
            chaotic = await run_all(proxy.url)
            kinds = {f.kind for f in proxy.faults}
        assert srv.stats.requests > unbroken_requests
    assert "reset_stream" in kinds
    assert chaotic == expected


# --- return shapes ---------------------------------------------------------------------


@pytest.fixture
async def server() -> Any:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


async def test_responses_are_ollamas_own_types_with_item_access(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        gen = await client.generate("m", "Why?", options=OPTS)
        chat = await client.chat("m", MSGS, options=OPTS)
        parts = [p async for p in await client.chat("m", MSGS, options=OPTS, stream=True)]
    assert isinstance(gen, ollama.GenerateResponse)
    assert isinstance(chat, ollama.ChatResponse)
    assert all(isinstance(p, ollama.ChatResponse) for p in parts)
    assert gen["response"] == gen.response and gen["done"] is True
    assert gen["eval_count"] == 30 and gen.done_reason == "length"
    assert chat["message"]["role"] == "assistant"
    assert chat["message"]["content"] == "".join(p["message"]["content"] for p in parts)
    assert [p["done"] for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "content" in parts[0]["message"] and "done_reason" not in parts[0]
    assert "eval_count" in parts[-1] and parts[-1].eval_count == 30
    with pytest.raises(KeyError):
        gen["nonexistent"]


async def test_streamed_parts_join_to_the_non_streamed_response(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        whole = await client.generate("m", "Why?", system="Be brief", options=OPTS)
        stream = await client.generate("m", "Why?", system="Be brief", options=OPTS, stream=True)
        assert isinstance(stream, ResponseStream)
        text = "".join([p["response"] async for p in stream])
    assert text == whole.response
    assert stream.result.text == text and stream.result.done


async def test_resumed_answer_equals_unbroken_answer(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        expected = await client.chat("m", MSGS, options=OPTS)
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=7)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            stream = await client.chat("m", MSGS, options=OPTS, stream=True)
            text = "".join([p.message.content async for p in stream])
    assert text == expected.message.content
    assert stream.result.resumes == 1


async def test_request_fields_reach_the_server_like_ollamas() -> None:
    rec = Recorder()

    def add(a: int, b: int) -> int:
        """Add two numbers.

        Args:
          a: The first number
          b: The second number
        """
        return a + b

    async with ReferenceServer(stop_probability=0.0, faults=rec) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            await client.generate(
                "m",
                "Describe",
                images=[b"\x89PNG"],
                options=ollama.Options(num_predict=3, temperature=0),
                format="",
                keep_alive="5m",
            )
            await client.chat(
                "m",
                [ollama.Message(role="user", content="hi")],
                tools=[add],
                think=True,
                options={"num_predict": 2},
            )
    gen, chat = rec.requests[0].body, rec.requests[1].body
    assert gen["images"] == [base64.b64encode(b"\x89PNG").decode()]
    assert gen["options"] == {"num_predict": 3, "temperature": 0}
    assert "format" not in gen and gen["keep_alive"] == "5m"
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert chat["tools"][0]["function"]["name"] == "add"
    assert chat["think"] is True


async def test_thinking_and_forwarded_methods(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        gen = await client.generate("m", "Why?", think=True, options=OPTS)
        chat = await client.chat("m", MSGS, think=True, options=OPTS)
        models = await client.list()  # not ours: forwarded to ollama.AsyncClient
    assert gen.thinking and gen["thinking"] == gen.thinking
    assert chat.message.thinking and chat["message"]["thinking"]
    assert isinstance(models, ollama.ListResponse) and models.models


# --- errors --------------------------------------------------------------------------


async def test_missing_model_raises_response_error_with_status(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        with pytest.raises(ollama.ResponseError) as info:
            await client.generate("missing-model", "hi")
        with pytest.raises(ollama.ResponseError) as info_stream:
            async for _ in await client.chat("missing-model", MSGS, stream=True):
                pass
    assert info.value.status_code == 404 and "not found" in info.value.error
    assert info_stream.value.status_code == 404


async def test_permanent_error_line_raises_response_error_minus_one() -> None:
    plan = FaultSchedule({0: Fault("error_line", after_tokens=2, message="invalid option")})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            got: list[str] = []
            with pytest.raises(ollama.ResponseError) as info:
                async for part in await client.generate("m", "hi", options=OPTS, stream=True):
                    got.append(part.response)
    assert info.value.status_code == -1 and "invalid option" in info.value.error
    assert len(got) == 2  # what came before the error is delivered first


async def test_unreachable_host_raises_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = FAST.replace(max_attempts=2, connect_timeout=1.0)
    async with AsyncClient(f"127.0.0.1:{port}", config=cfg) as client:
        with pytest.raises(ConnectionError, match="Failed to connect to Ollama"):
            await client.generate("m", "hi")


# --- sans-I/O parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "1.2.3.4",
        ":56789",
        "1.2.3.4:56789",
        "http://1.2.3.4",
        "https://1.2.3.4",
        "https://1.2.3.4:56789",
        "example.com",
        "http://example.com:56789/path/",
        "[0001:002:003:0004::1]",
        "https://[0001:002:003:0004::1]:56789",
    ],
)
def test_host_is_parsed_like_ollama_python(host: str | None, monkeypatch: Any) -> None:
    from ollama._client import _parse_host

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert parse_host(host) == _parse_host(host)


def test_dropin_is_quiet_unless_a_log_level_is_chosen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no TOML config here
    monkeypatch.delenv("RESILIENT_STREAM_LOG_LEVEL", raising=False)
    assert default_config().log_level == "warning"
    monkeypatch.setenv("RESILIENT_STREAM_LOG_LEVEL", "info")
    assert default_config().log_level == "info"
    monkeypatch.delenv("RESILIENT_STREAM_LOG_LEVEL")
    (tmp_path / "resilient_stream.toml").write_text('log_level = "debug"\n')
    assert default_config().log_level == "debug"


def test_native_types_read_like_ollamas_without_the_package() -> None:
    f = ResponseFactory(native=True)
    part = f.generate(GenerateChunk(model="m", created_at="t", response="Hi", done=False))
    assert isinstance(part, NativeGenerate)
    assert part["response"] == part.response == "Hi"
    assert "response" in part and "done_reason" not in part and part.get("x", 1) == 1
    last = ChatChunk(
        model="m",
        done=True,
        done_reason="stop",
        eval_count=3,
        message=Message(
            role="assistant",
            content="",
            tool_calls=[ToolCall(function=WireFunction(name="add", arguments={"a": 1}))],
        ),
    )
    chat = f.chat(last)
    assert isinstance(chat, NativeChat)
    assert chat["message"]["tool_calls"][0]["function"]["name"] == "add"
    assert chat.message.tool_calls[0].function.arguments == {"a": 1}
    final = f.chat_final(last, "full text", "", list(last.message.tool_calls or []), [])
    assert final.message.content == "full text" and final["eval_count"] == 3


def test_ollama_factory_builds_tool_calls_as_ollama_models() -> None:
    f = ResponseFactory(native=False)
    msg = Message(role="assistant", tool_calls=[ToolCall(function=WireFunction(name="f"))])
    chat = f.chat(ChatChunk(model="m", message=msg))
    assert isinstance(chat.message.tool_calls[0], ollama.Message.ToolCall)
    assert chat["message"]["tool_calls"][0]["function"]["name"] == "f"
