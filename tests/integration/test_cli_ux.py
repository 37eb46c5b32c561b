"""The CLI as a new user meets it (issue 10, item 15): ``--version``; while it retries, a
line per retry on stderr (on a terminal, or with ``--verbose``) and, when nothing listens,
a hint at the URL; errors as a line or two on stderr with exit code 1, never a traceback.

Every run is a real subprocess against real sockets on 127.0.0.1: a closed port, the
reference server, or a tiny HTML server written here. A terminal is a pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import pty
import re
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer

pytestmark = pytest.mark.timeout(60)

PROMPT = "Why is the sky blue?"
FAST_ENV = {
    "RESILIENT_STREAM_MAX_ATTEMPTS": "3",
    "RESILIENT_STREAM_BACKOFF_INITIAL": "0.05",
    "RESILIENT_STREAM_BACKOFF_MAX": "0.1",
    "RESILIENT_STREAM_IDLE_TIMEOUT": "0.5",
}
RETRY_LINE = re.compile(
    r"attempt (\d+) of 3 failed: (.+); retrying (in \d+ ms|in \d+\.\ds|at once)"
)
SUBPROCESS_TIMEOUT = 30


def closed_port_url() -> str:
    """A URL nothing listens on: a port bound, read and closed again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _read_all(fd: int) -> bytes:
    """Everything the child writes to the terminal, until its side is closed."""
    data = b""
    while True:
        try:
            piece = os.read(fd, 4096)
        except OSError:  # EIO: every slave fd is closed (Linux)
            return data
        if not piece:
            return data
        data += piece


async def run(
    *argv: str, env: dict[str, str] | None = None, tty_stderr: bool = False
) -> tuple[int, str, str]:
    """Run ``argv`` (after the interpreter); returns (exit code, stdout, stderr). With
    ``tty_stderr``, stderr is a pseudo-terminal (stdout stays a pipe)."""
    master = slave = -1
    if tty_stderr:
        master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=slave if tty_stderr else asyncio.subprocess.PIPE,
        env={**os.environ, **FAST_ENV, **(env or {})},
    )
    terminal: asyncio.Future[bytes] | None = None
    if tty_stderr:
        os.close(slave)
        terminal = asyncio.get_running_loop().run_in_executor(None, _read_all, master)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SUBPROCESS_TIMEOUT)
        if terminal is not None:
            err = (await asyncio.wait_for(terminal, SUBPROCESS_TIMEOUT)).replace(b"\r\n", b"\n")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if terminal is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(terminal, SUBPROCESS_TIMEOUT)
            os.close(master)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cli(*args: str, **kw: Any) -> tuple[int, str, str]:
    return await run("-m", "resilient_stream.cli", *args, **kw)


# --- --version ---------------------------------------------------------------------


async def test_version_prints_the_installed_version_and_exits_0() -> None:
    code, out, err = await cli("--version")
    assert (code, err) == (0, "")
    assert out == f"resilient-stream {importlib.metadata.version('resilient-stream')}\n"


# --- nothing listens: say it retries, then hint at the URL ---------------------------


LIBRARY_USER = """
import asyncio, sys
from resilient_stream import StreamClient, StreamError

async def main():
    async with StreamClient(sys.argv[1]) as client:
        try:
            await client.generate(model="m", prompt="hi").collect()
        except StreamError:
            pass

asyncio.run(main())
"""


def assert_retried_then_hinted(err: str, url: str, *, summary: bool = False) -> None:
    lines = err.splitlines()
    if summary:
        assert lines.pop().startswith("tokens=0 resumes=0 ")
    *retries, error, hint = lines
    assert [RETRY_LINE.fullmatch(line) is not None for line in retries] == [True, True], err
    matches = [RETRY_LINE.fullmatch(line) for line in retries]
    assert [(m.group(1), m.group(2)) for m in matches if m] == [
        ("1", "connection refused"),
        ("2", "connection refused"),
    ]
    assert error.startswith("error: gave up after 3 attempts; last cause: ConnectError")
    assert hint == f"hint: is a server running at {url}?"


@pytest.mark.parametrize("http", [[], ["--http1"]], ids=["h2c-probe", "http1"])
async def test_on_a_terminal_it_says_it_retries_and_why_and_hints_at_the_url(
    http: list[str],
) -> None:
    url = closed_port_url()
    code, out, err = await cli("generate", "--host", url, "-m", "m", *http, PROMPT, tty_stderr=True)
    assert (code, out) == (1, "")
    assert_retried_then_hinted(err, url)
    # A library user's program on the same terminal gets none of it: the lines are the CLI's.
    lib_code, lib_out, lib_err = await run("-c", LIBRARY_USER, url, tty_stderr=True)
    assert (lib_code, lib_out) == (0, ""), lib_err
    assert "retrying" not in lib_err and "hint:" not in lib_err and "attempt 1 of" not in lib_err


async def test_verbose_says_it_retries_without_a_terminal_too() -> None:
    url = closed_port_url()
    code, out, err = await cli("chat", "--host", url, "-m", "m", "-v", PROMPT)
    assert (code, out) == (1, "")
    lines = [line for line in err.splitlines() if " set aside for " not in line]
    assert "stream.retry_wait" not in err  # words for a person, not log records
    assert_retried_then_hinted("\n".join(lines), url, summary=True)


async def test_piped_stderr_without_verbose_gets_only_the_error_and_the_hint() -> None:
    url = closed_port_url()
    code, out, err = await cli("generate", "--host", url, "-m", "m", PROMPT)
    assert (code, out) == (1, "")
    error, hint = err.splitlines()
    assert error.startswith("error: gave up after 3 attempts; last cause: ConnectError")
    assert hint == f"hint: is a server running at {url}?"


# --- against a live server: retries and resumes said, the answer untouched ------------


async def reference_answer(num_predict: int) -> str:
    async with ReferenceServer(stop_probability=0.0) as srv:
        _, out, _ = await cli(
            "generate", "--host", srv.url, "-m", "m", "--num-predict", str(num_predict), PROMPT
        )
    return out


FLAKY = FaultSchedule({0: Fault("status", status=503), 1: Fault("drop_connection", after_tokens=5)})


@pytest.mark.reference_server(stop_probability=0.0, faults=FLAKY)
@pytest.mark.parametrize("mode", ["verbose", "terminal"])
async def test_a_503_and_a_dropped_connection_are_said_and_the_answer_is_whole(
    reference_server: ReferenceServer, mode: str
) -> None:
    expected = await reference_answer(30)
    verbose = ["--verbose"] if mode == "verbose" else []
    code, out, err = await cli(
        "generate", "--host", reference_server.url, "-m", "m", "--num-predict", "30",
        *verbose, PROMPT, tty_stderr=mode == "terminal",
    )  # fmt: skip
    assert code == 0, err
    assert out == expected
    # --verbose also shows the transport's connection events, as `name key=value` lines
    lines = [line for line in err.splitlines() if not line.startswith("connection.")]
    first = RETRY_LINE.fullmatch(lines[0])
    assert first is not None and first.group(1, 2) == ("1", "HTTP 503"), err
    if mode == "verbose":
        assert re.fullmatch(
            r"stream broke after 5 tokens: connection lost; resuming \(attempt 3 of 3\)",
            lines[1],
        ), err
        assert lines[2].startswith("tokens=30 resumes=1 ") and len(lines) == 3, err
    else:  # on a terminal, a resume is silent: the text simply continues
        assert len(lines) == 1, err
    assert "error:" not in err and "hint:" not in err


# --- errors are a line or two ---------------------------------------------------------

PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head><title>Welcome to nginx!</title></head>\n<body>\n"
    + b"<p>If you see this page, the web server is installed and working.</p>\n" * 300
    + b"</body>\n</html>\n"
)


@contextlib.asynccontextmanager
async def html_server(status: int) -> AsyncIterator[str]:
    """Answers every request with ``status`` and a long HTML page (HTTP/1.1)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(
                    b"HTTP/1.1 %d Whatever\r\ncontent-type: text/html\r\n"
                    b"content-length: %d\r\n\r\n" % (status, len(PAGE)) + PAGE
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_an_html_page_is_a_readable_line_or_two_and_exit_1() -> None:
    async with html_server(404) as not_found, html_server(200) as ok_page:
        runs = await asyncio.gather(
            cli("generate", "--http1", "--host", not_found, "-m", "m", PROMPT),
            cli("chat", "--http1", "--host", ok_page, "-m", "m", PROMPT),
        )
    for code, out, err in runs:
        assert (code, out) == (1, ""), err
        assert "Traceback" not in err
        lines = err.splitlines()
        assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), err
        assert all(len(line) <= 500 for line in lines), err


async def test_a_bad_host_is_a_usage_error_not_a_traceback() -> None:
    code, out, err = await cli("generate", "--host", "http://[::1", "-m", "m", PROMPT)
    assert (code, out) == (2, "")
    assert "Traceback" not in err
    assert err.splitlines() == ["resilient-stream generate: bad --host (or $OLLAMA_HOST): "
                                "Invalid IPv6 URL"]  # fmt: skip
