"""`resilient-stream generate` / `chat` as a person runs them: a real subprocess against a
reference server started by the test; output, resume, summary line and exit codes."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
from typing import Any

import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.cli import main
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer

pytestmark = pytest.mark.timeout(60)

PROMPT = "Why is the sky blue?"
FAST_ENV = {
    "RESILIENT_STREAM_IDLE_TIMEOUT": "0.5",
    "RESILIENT_STREAM_BACKOFF_INITIAL": "0.01",
    "RESILIENT_STREAM_BACKOFF_MAX": "0.05",
}


async def cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    """Run the CLI; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resilient_stream.cli",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **FAST_ENV, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


async def reference_text(chat: bool, **fields: Any) -> str:
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with StreamClient(srv.url, config=StreamConfig(http2=False)) as client:
            if chat:
                msgs = (
                    [{"role": "system", "content": "Be brief"}]
                    if fields.pop("system", None)
                    else []
                )
                msgs.append({"role": "user", "content": PROMPT})
                return (await client.chat(model="m", messages=msgs, **fields).collect()).text
            return (await client.generate(model="m", prompt=PROMPT, **fields).collect()).text


def as_printed(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


async def test_generate_prints_the_whole_answer_after_resumes_with_a_summary() -> None:
    expected = await reference_text(False, system="Be brief", options={"num_predict": 40})
    plan = FaultSchedule(
        {0: Fault("drop_connection", after_tokens=9), 1: Fault("stall", after_tokens=5)}
    )
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        code, out, err = await cli(
            "generate", "--host", srv.url, "-m", "m", "--system", "Be brief",
            "--num-predict", "40", "--verbose", PROMPT,
        )  # fmt: skip
        assert srv.stats.requests == 3
    assert code == 0, err
    assert out == as_printed(expected)
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("tokens=40 resumes=2 ") and "done_reason=length" in summary


async def test_chat_streams_one_user_message_and_reads_stdin() -> None:
    expected = await reference_text(True, system="Be brief", options={"num_predict": 25})
    plan = FaultSchedule({0: Fault("reset_stream", after_tokens=11)})
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        arg_run, stdin_run = await asyncio.gather(
            cli("chat", "--host", srv.url, "-m", "m", "--system", "Be brief",
                "--num-predict", "25", PROMPT),
            cli("chat", "--host", srv.url, "-m", "m", "--system", "Be brief",
                "--num-predict", "25", stdin=PROMPT.encode()),
        )  # fmt: skip
    for code, out, err in (arg_run, stdin_run):
        assert code == 0, err
        assert out == as_printed(expected)
        assert err == ""  # no summary, no log lines without --verbose


async def test_think_prints_thinking_to_stderr_and_the_answer_to_stdout() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with StreamClient(srv.url, config=StreamConfig()) as client:
            msgs = [{"role": "user", "content": PROMPT}]
            opts = {"num_predict": 30}
            ref = await client.chat(model="m", messages=msgs, options=opts, think=True).collect()
        code, out, err = await cli(
            "chat", "--host", srv.url, "-m", "m", "--think", "--num-predict", "30", PROMPT
        )
    assert ref.thinking and ref.text  # the reference model thinks, then answers
    assert code == 0, err
    assert out == as_printed(ref.text)
    assert err == ref.thinking + "\n"


async def test_raw_generate_and_http1_against_an_http1_only_server() -> None:
    expected = await reference_text(False, raw=True, options={"num_predict": 15})
    async with ReferenceServer(stop_probability=0.0, http2=False) as srv:
        code, out, err = await cli(
            "generate", "--host", srv.url, "-m", "m", "--raw", "--http1",
            "--num-predict", "15", PROMPT,
        )  # fmt: skip
        assert srv.stats.connections_opened == 1  # no h2c probe
    assert code == 0, err
    assert out == as_printed(expected)


async def test_stream_errors_exit_1_with_the_reason_on_stderr() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    async with ReferenceServer() as srv:
        (code_404, out_404, err_404), (code_dead, _, err_dead) = await asyncio.gather(
            cli("generate", "--host", srv.url, "-m", "missing-model", PROMPT),
            cli("chat", "--host", dead, "-m", "m", PROMPT,
                env={"RESILIENT_STREAM_MAX_ATTEMPTS": "2"}),
        )  # fmt: skip
    assert (code_404, out_404) == (1, "")
    assert "404" in err_404 and "not found" in err_404
    # the server's own words reach the terminal user (the library's messages omit them)
    assert "server said: model 'missing-model' not found" in err_404
    assert code_dead == 1 and err_dead.startswith("error: ")


def run_main(argv: list[str]) -> int:
    """The CLI's main() in-process (argparse exits with SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run_main(["generate", PROMPT]) == 2  # no --model
    assert "--model" in capsys.readouterr().err
    assert run_main(["generate", "-m", "m"]) == 2  # no prompt, nothing on stdin
    assert "empty prompt" in capsys.readouterr().err
    assert run_main(["chat", "-m", "m", "--option", "novalue", PROMPT]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    monkeypatch.setenv("RESILIENT_STREAM_IDLE_TIMEOUT", "soon")
    assert run_main(["generate", "-m", "m", PROMPT]) == 2
    assert "idle_timeout" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys: Any) -> None:
    for sub in ("generate", "chat"):
        assert run_main([sub, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--host" in out and "--http1" in out and "--verbose" in out
