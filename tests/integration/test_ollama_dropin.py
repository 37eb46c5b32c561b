"""resilient_stream.ollama: the official ollama client classes on ResilientTransport.

ollama-python's own examples (tests/upstream/ollama_python/examples, byte for byte;
run_example.py swaps the import) and the multi-turn async-chat-stream example
(tests/data/ollama_examples) run in a subprocess against the reference server, with
server-side faults and through the chaos proxy, and print exactly what an unbroken
run prints. ollama-python's own client tests run in tests/upstream/ollama_python.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from ollama._client import CONNECTION_ERROR_MESSAGE

from resilient_stream import StreamClient, StreamConfig, StreamResult
from resilient_stream.chaos import ChaosProxy
from resilient_stream.ollama import AsyncClient, Client
from resilient_stream.ollama._request import parse_host
from resilient_stream.ollama.client import UPGRADE_ENV, default_config, timeout_overrides, upgrades
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer, RequestInfo
from resilient_stream.sdk import ResilientTransport

pytestmark = pytest.mark.timeout(60)

TESTS = Path(__file__).parents[1]
UPSTREAM = TESTS / "upstream" / "ollama_python"
RUNNER = UPSTREAM / "run_example.py"
FAST = StreamConfig(
    idle_timeout=0.5, first_token_timeout=3.0, backoff_initial=0.01, backoff_max=0.05
)
OPTS = {"num_predict": 30}
MSGS = [{"role": "user", "content": "Why is the sky blue?"}]
#: What a program sets to have the drop-in stream its stream=False calls underneath.
UPGRADE_ON = {UPGRADE_ENV: "1"}

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


async def run_example(name: str, host: str, stdin: str = "", **env_extra: str) -> str:
    """``python run_example.py examples/<name>`` (upstream's, import swapped), or a
    tests/data example that imports resilient_stream.ollama itself."""
    upstream = UPSTREAM / "examples" / name
    argv = [str(RUNNER), str(upstream)] if upstream.exists() else [str(_DATA / name)]
    env = {**os.environ, "OLLAMA_HOST": host, **FAST_ENV, **env_extra}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
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


_DATA = TESTS / "data" / "ollama_examples"
CHAT_STREAM_STDIN = "Why is the sky blue?\nWhat about sunsets?\n"
#: Streaming examples: resumable whatever the transport does with stream=False.
STREAMING = {"chat-stream.py": "", "generate-stream.py": "", "async-chat-stream.py": ""}
STREAMING["async-chat-stream.py"] = CHAT_STREAM_STDIN
#: Non-streaming ones (ollama's default stream=False).
NON_STREAMING = {"async-generate.py": "", "async-chat.py": ""}


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
        "chat-stream.py": chat.text,
        "generate-stream.py": gen.text,
        "async-chat-stream.py": "".join(turns) + ">>> ",
        "async-generate.py": gen.text + "\n",
        "async-chat.py": chat.text + "\n",
    }


async def run_all(host: str, runs: dict[str, str], **env: str) -> dict[str, str]:
    outs = await asyncio.gather(*(run_example(n, host, s, **env) for n, s in runs.items()))
    return dict(zip(runs, outs, strict=True))


async def check_examples(runs: dict[str, str], **env: str) -> None:
    """Unbroken, with server faults (each costing one request: a resume, not a
    restart) and through the chaos proxy: the same output, byte for byte."""
    expected = {k: v for k, v in (await expected_outputs()).items() if k in runs}
    assert all(len(v) > 100 for v in expected.values())

    async with ReferenceServer() as srv:
        unbroken = await run_all(srv.url, runs, **env)
        unbroken_requests = srv.stats.requests
    assert unbroken == expected

    kinds = ["drop_connection", "reset_stream", "truncate_line", "error_line", "stall"]
    issued: list[str] = []

    def faults(info: RequestInfo) -> Fault | None:
        if info.index % 2 or len(issued) == len(kinds):
            return None
        issued.append(kinds[len(issued)])
        return Fault(issued[-1], after_tokens=4 + info.index, message="llama runner process died")

    async with ReferenceServer(faults=faults) as srv:
        faulted = await run_all(srv.url, runs, **env)
        assert len(issued) >= 2
        assert srv.stats.requests == unbroken_requests + len(issued)
    assert faulted == expected

    toxics = [
        "reset_stream:probability=1.0,min_bytes=300,max_bytes=3000,max_streams=1",
        "drop_after_data_frames:frames=20,frames_max=50,toxicity=0.5",
        "slicer:average_size=40,size_variation=30",
    ]
    async with ReferenceServer() as srv:
        async with ChaosProxy(upstream=f"127.0.0.1:{srv.port}", toxics=toxics, seed=7) as proxy:
            chaotic = await run_all(proxy.url, runs, **env)
            seen = {f.kind for f in proxy.faults}
        assert srv.stats.requests > unbroken_requests
    assert "reset_stream" in seen
    assert chaotic == expected


@pytest.mark.timeout(90)
async def test_streaming_examples_print_complete_output_despite_faults() -> None:
    """Upstream's sync chat-stream.py and generate-stream.py (module functions on the
    default drop-in Client) and the multi-turn async chat."""
    await check_examples(STREAMING)


@pytest.mark.timeout(90)
async def test_non_streaming_examples_print_complete_output_despite_faults() -> None:
    """Upstream's async-generate.py and async-chat.py (ollama's default stream=False),
    with the upgrade chosen in the environment: streamed underneath, resumed, answered
    as one JSON body."""
    await check_examples(NON_STREAMING, **UPGRADE_ON)


async def test_the_official_client_prints_nothing_on_the_same_fault() -> None:
    """The contrast: upstream's generate-stream.py on ollama itself and one dropped
    connection: it exits with httpx's error (the drop-in resumes: the test above)."""
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=5)})
    env = {**os.environ, **FAST_ENV, "RESILIENT_UPSTREAM_CLIENT": "official"}
    example = str(UPSTREAM / "examples" / "generate-stream.py")
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        env["OLLAMA_HOST"] = srv.url
        official = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(RUNNER), example],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    assert official.returncode != 0
    assert "RemoteProtocolError" in official.stderr or "ReadError" in official.stderr


# --- the classes ---------------------------------------------------------------------


@pytest.fixture
async def server() -> Any:
    async with ReferenceServer(stop_probability=0.0) as srv:
        yield srv


async def test_clients_are_ollamas_classes_on_the_resilient_transport() -> None:
    async with AsyncClient("127.0.0.1:9") as client:
        assert isinstance(client, ollama.AsyncClient)
        assert client._client._transport is client.resilient_transport
        assert isinstance(client.resilient_transport, ResilientTransport)
    with Client("127.0.0.1:9", config=FAST) as sync:
        assert isinstance(sync, ollama.Client)
        assert sync.resilient_transport.config is not None
    assert sync._client.is_closed


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
    assert "done_reason" not in parts[0] and parts[-1].eval_count == 30


async def test_streamed_parts_join_to_the_non_streamed_response(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        whole = await client.generate("m", "Why?", system="Be brief", options=OPTS)
        stream = await client.generate("m", "Why?", system="Be brief", options=OPTS, stream=True)
        text = "".join([p["response"] async for p in stream])
    assert text == whole.response and len(text) > 20


async def test_resumed_answer_equals_unbroken_answer_async_and_sync() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            expected = await client.chat("m", MSGS, options=OPTS)
    for kind in ("drop_connection", "reset_stream", "stall"):
        plan = FaultSchedule({0: Fault(kind, after_tokens=7)})
        results: list[StreamResult] = []
        async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
            async with AsyncClient(srv.url, config=FAST, on_resumed=results.append) as client:
                stream = await client.chat("m", MSGS, options=OPTS, stream=True)
                text = "".join([p.message.content async for p in stream])
            assert srv.stats.requests == 2, kind  # one resume, not a restart
        assert text == expected.message.content, kind
        # the seam ollama's types cannot show, told to on_resumed
        (result,) = results
        assert result.resumes == 1 and result.verified and result.text == text, kind

    def sync_run(url: str, results: list[StreamResult]) -> str:
        with Client(url, config=FAST, on_resumed=results.append) as client:
            parts = client.chat("m", MSGS, options=OPTS, stream=True)
            return "".join(p.message.content or "" for p in parts)

    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=7)})
    results = []
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        text = await asyncio.to_thread(sync_run, srv.url, results)
        assert srv.stats.requests == 2
    assert text == expected.message.content
    assert [r.verified for r in results] == [True]


async def test_non_streaming_calls_resume_when_the_upgrade_is_chosen() -> None:
    """``upgrade_non_streaming=True``: a stream=False chat that breaks mid-answer is
    resumed underneath and answered as ollama's one ChatResponse; by default it goes
    out as ollama builds it and the same fault is ollama's error (one request each)."""
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            expected = await client.chat("m", MSGS, options=OPTS)

    def plan() -> FaultSchedule:
        return FaultSchedule({0: Fault("drop_connection", after_tokens=7)})

    async with ReferenceServer(stop_probability=0.0, faults=plan()) as srv:
        async with AsyncClient(srv.url, config=FAST, upgrade_non_streaming=True) as client:
            whole = await client.chat("m", MSGS, options=OPTS)
        assert srv.stats.requests == 2
    assert isinstance(whole, ollama.ChatResponse) and whole.done
    assert whole.message.content == expected.message.content

    def sync_run(url: str) -> str:
        with Client(url, config=FAST, upgrade_non_streaming=True) as client:
            return client.chat("m", MSGS, options=OPTS).message.content or ""

    async with ReferenceServer(stop_probability=0.0, faults=plan()) as srv:
        assert await asyncio.to_thread(sync_run, srv.url) == expected.message.content
        assert srv.stats.requests == 2

    async with ReferenceServer(stop_probability=0.0, faults=plan()) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            with pytest.raises(httpx.HTTPError):
                await client.chat("m", MSGS, options=OPTS)
        assert srv.stats.requests == 1


def test_the_upgrade_is_chosen_by_argument_then_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(UPGRADE_ENV, raising=False)
    assert upgrades(None) is False and upgrades(True) is True
    monkeypatch.setenv(UPGRADE_ENV, "1")
    assert upgrades(None) is True and upgrades(False) is False
    monkeypatch.setenv(UPGRADE_ENV, "maybe")
    with pytest.raises(ValueError, match=UPGRADE_ENV):
        upgrades(None)


async def test_request_bodies_are_ollamas_own() -> None:
    """The server sees what the official client sends (``"tools": []`` and all): the
    drop-in builds no body of its own."""

    def add(a: int, b: int) -> int:
        """Add two numbers.

        Args:
          a: The first number
          b: The second number
        """
        return a + b

    async def calls(client: Any) -> None:
        async for _ in await client.generate(
            "m",
            "Describe",
            images=[b"\x89PNG"],
            options=ollama.Options(num_predict=3, temperature=0),
            keep_alive="5m",
            stream=True,
        ):
            pass
        async for _ in await client.chat(
            "m",
            [ollama.Message(role="user", content="hi")],
            tools=[add],
            think=True,
            options={"num_predict": 2},
            stream=True,
        ):
            pass
        await client.chat("m", MSGS, options={"num_predict": 2})

    bodies = []
    for cls in (ollama.AsyncClient, AsyncClient):
        rec = Recorder()
        async with ReferenceServer(stop_probability=0.0, faults=rec) as srv:
            async with cls(srv.url) as client:
                await calls(client)
        bodies.append([r.body for r in rec.requests])
    official, ours = bodies
    assert ours[0] == official[0] and ours[1] == official[1]
    assert ours[1]["tools"][0]["function"]["name"] == "add"
    # stream=False goes out as ollama builds it (the upgrade is opt-in for the drop-in)
    assert ours[2] == official[2] and ours[2]["stream"] is False and ours[2]["tools"] == []


async def test_thinking_and_other_methods(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        gen = await client.generate("m", "Why?", think=True, options=OPTS)
        chat = await client.chat("m", MSGS, think=True, options=OPTS)
        models = await client.list()  # not a stream: passes through the transport
    assert gen.thinking and gen["thinking"] == gen.thinking
    assert chat.message.thinking and chat["message"]["thinking"]
    assert isinstance(models, ollama.ListResponse) and models.models


# --- errors: ollama's own ----------------------------------------------------------------


async def test_missing_model_raises_response_error_with_status(server: ReferenceServer) -> None:
    async with AsyncClient(server.url, config=FAST) as client:
        with pytest.raises(ollama.ResponseError) as info:
            await client.generate("missing-model", "hi")
        with pytest.raises(ollama.ResponseError) as info_stream:
            async for _ in await client.chat("missing-model", MSGS, stream=True):
                pass
    assert info.value.status_code == 404 and "not found" in info.value.error
    assert info_stream.value.status_code == 404
    assert server.stats.requests == 2  # a 404 is not retried


async def test_a_persistent_503_is_retried_then_ollamas_response_error() -> None:
    def always_503(info: RequestInfo) -> Fault:
        return Fault("status", status=503)

    async with ReferenceServer(stop_probability=0.0, faults=always_503) as srv:
        async with AsyncClient(srv.url, config=FAST.replace(max_attempts=3)) as client:
            with pytest.raises(ollama.ResponseError) as info:
                async for _ in await client.chat("m", MSGS, stream=True):
                    pass
        assert srv.stats.requests == 3  # retried, where ollama raises at the first
    assert info.value.status_code == 503 and "injected 503" in info.value.error


async def test_permanent_error_line_mid_stream_is_not_resumed() -> None:
    """An ``{"error": ...}`` line naming a bad request is not resumed: the parts before
    it are delivered, then the stream fails (one request)."""
    plan = FaultSchedule({0: Fault("error_line", after_tokens=2, message="invalid option")})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            got: list[str] = []
            with pytest.raises(Exception, match="invalid option"):
                async for part in await client.generate("m", "hi", options=OPTS, stream=True):
                    got.append(part.response)
        assert srv.stats.requests == 1
    assert len(got) == 2


async def test_permanent_error_line_mid_stream_is_ollamas_response_error() -> None:
    plan = FaultSchedule({0: Fault("error_line", after_tokens=2, message="invalid option")})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with AsyncClient(srv.url, config=FAST) as client:
            with pytest.raises(ollama.ResponseError) as info:
                async for _ in await client.generate("m", "hi", options=OPTS, stream=True):
                    pass
    assert info.value.status_code == -1 and "invalid option" in info.value.error


async def test_give_up_after_output_is_an_httpx_error_like_ollamas() -> None:
    plan = FaultSchedule({0: Fault("drop_connection", after_tokens=2)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with AsyncClient(srv.url, config=FAST.replace(max_attempts=1)) as client:
            got: list[str] = []
            with pytest.raises(httpx.TransportError):
                async for part in await client.generate("m", "hi", options=OPTS, stream=True):
                    got.append(part.response)
    assert len(got) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_host_raises_ollamas_connection_errors() -> None:
    cfg = FAST.replace(max_attempts=2, connect_timeout=1.0)
    async with AsyncClient(f"127.0.0.1:{_free_port()}", config=cfg) as client:
        with pytest.raises(ConnectionError) as gen:
            await client.generate("m", "hi")
        with pytest.raises(ConnectionError) as show:
            await client.show("m")
        # ollama's streaming path lets httpx's error through: so does the drop-in
        with pytest.raises(httpx.ConnectError):
            async for _ in await client.generate("m", "hi", stream=True):
                pass
    assert str(gen.value) == str(show.value) == CONNECTION_ERROR_MESSAGE  # no suffix


# --- without ollama; sans-I/O parts -----------------------------------------------------------


def test_without_ollama_a_clear_import_error_and_the_cli_still_imports() -> None:
    code = (
        "import sys; sys.modules['ollama'] = None\n"
        "import resilient_stream.cli, resilient_stream.cli.generate\n"
        "try:\n"
        "    from resilient_stream.ollama import AsyncClient\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install ollama" in out.stdout


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
def test_cli_host_is_parsed_like_ollama_python(host: str | None, monkeypatch: Any) -> None:
    from ollama._client import _parse_host

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert parse_host(host) == _parse_host(host)


def test_dropin_is_quiet_unless_a_log_level_is_chosen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no TOML config here
    monkeypatch.delenv("RESILIENT_STREAM_LOG_LEVEL", raising=False)
    assert default_config().log_level == "warning"
    assert AsyncClient().resilient_transport.config.log_level == "warning"
    monkeypatch.setenv("RESILIENT_STREAM_LOG_LEVEL", "info")
    assert default_config().log_level == "info"
    monkeypatch.delenv("RESILIENT_STREAM_LOG_LEVEL")
    (tmp_path / "resilient_stream.toml").write_text('log_level = "debug"\n')
    assert default_config().log_level == "debug"


def test_ollamas_timeout_maps_onto_the_stream_timeouts() -> None:
    assert timeout_overrides(None) == {}
    assert timeout_overrides(5)["idle_timeout"] == 5.0
    t = timeout_overrides(httpx.Timeout(None, connect=2.0, read=7.0))
    assert t == {"connect_timeout": 2.0, "first_token_timeout": 7.0, "idle_timeout": 7.0}
    cfg = AsyncClient(timeout=4.0, config=FAST).resilient_transport.config
    assert cfg.first_token_timeout == 4.0 and cfg.backoff_initial == FAST.backoff_initial
    with pytest.raises(TypeError, match="timeout"):
        timeout_overrides("soon")
