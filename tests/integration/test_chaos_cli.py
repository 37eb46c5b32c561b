"""`resilient-stream proxy` and the compact toxic spec syntax."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import httpx
import pytest

from resilient_stream.chaos import InvalidToxicError, ToxicSpec, format_compact, parse_compact
from resilient_stream.chaos.spec import to_spec


def test_compact_spec_reads_type_stream_and_attributes() -> None:
    spec = parse_compact("latency:downstream:latency=100,jitter=10")
    assert spec == ToxicSpec(
        type="latency",
        name="latency_downstream",
        stream="downstream",
        toxicity=1.0,
        attributes={"latency": 100, "jitter": 10},
    )


def test_compact_spec_defaults_to_downstream_and_takes_name_and_toxicity() -> None:
    spec = parse_compact("reset_stream:probability=0.25,name=rs,toxicity=0.5")
    assert (spec.type, spec.stream, spec.name, spec.toxicity) == (
        "reset_stream",
        "downstream",
        "rs",
        0.5,
    )
    assert spec.attributes == {"probability": 0.25}
    assert parse_compact("slicer:up").stream == "upstream"
    assert parse_compact("cut_data:torn=true").attributes == {"torn": True}


def test_compact_spec_accepts_toxiproxy_json() -> None:
    text = '{"type": "bandwidth", "stream": "upstream", "attributes": {"rate": 5}}'
    spec = parse_compact(text)
    assert (spec.type, spec.name, spec.attributes) == (
        "bandwidth",
        "bandwidth_upstream",
        {"rate": 5},
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "latency:sideways",
        "latency:latency",
        "nosuch:x=1",
        "latency:latency=-5",
        "latency:bogus=1",
    ],
)
def test_bad_specs_are_rejected_with_a_message(text: str) -> None:
    with pytest.raises(InvalidToxicError):
        to_spec(text)


def test_compact_spec_round_trips() -> None:
    spec = to_spec("goaway:up:frames=3,last_stream_id=5,toxicity=0.5,name=g")
    assert to_spec(format_compact(spec)) == spec


async def _line(stream: asyncio.StreamReader) -> str:
    return (await asyncio.wait_for(stream.readline(), 10)).decode()


@pytest.mark.timeout(30)
async def test_cli_runs_a_proxy_with_toxics_and_an_api_then_prints_faults() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    upstream = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resilient_stream.cli", "proxy",
        "--listen", "127.0.0.1:0", "--upstream", upstream,
        "--toxic", "latency:downstream:latency=30", "--seed", "9",
        "--api", "127.0.0.1:0", "--faults",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = await _line(proc.stdout)
        assert first.startswith("proxy chaos listening on 127.0.0.1:")
        listen = first.split()[4]
        assert json.loads((await _line(proc.stdout)).split(" ", 1)[1])["type"] == "latency"
        api_url = (await _line(proc.stdout)).split()[-1]
        async with httpx.AsyncClient(base_url=api_url) as client:
            assert (await client.get("/proxies/chaos")).json()["listen"] == listen
        host, port = listen.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
        writer.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0
        record = json.loads(out.decode().splitlines()[0])
        assert (record["kind"], record["connection"]) == ("latency", 0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        srv.close()
        await srv.wait_closed()


@pytest.mark.timeout(20)
async def test_cli_rejects_a_bad_toxic_spec() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resilient_stream.cli", "proxy",
        "--upstream", "127.0.0.1:1", "--toxic", "latency:nope",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert b"unknown stream" in err


@pytest.mark.timeout(20)
async def test_cli_rejects_a_bad_attribute_value_with_exit_code_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resilient_stream.cli", "proxy",
        "--upstream", "127.0.0.1:1", "--toxic", "reset_stream:keyed_by=bogus",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert b"keyed_by" in err


@pytest.mark.timeout(30)
async def test_cli_with_api_and_no_upstream_serves_an_empty_registry() -> None:
    """Like `toxiproxy-server`: proxies come later, through the REST API."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    upstream = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resilient_stream.cli", "proxy",
        "--api", "127.0.0.1:0", "--seed", "4", "--faults",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = await _line(proc.stdout)
        assert first.startswith("api listening on http://127.0.0.1:"), first
        api_url = first.split()[-1]
        async with httpx.AsyncClient(base_url=api_url) as client:
            assert (await client.get("/proxies")).json() == {}
            r = await client.post("/proxies", json={"name": "later", "upstream": upstream})
            assert r.status_code == 201
            r = await client.post(
                "/proxies/later/toxics", json={"type": "latency", "attributes": {"latency": 1}}
            )
            assert r.status_code == 200
        host, port = await _proxy_listen(api_url, "later")
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"hi"
        writer.close()
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err
        record = json.loads(out.decode().splitlines()[0])
        assert (record["proxy"], record["kind"], record["connection"]) == ("later", "latency", 0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        srv.close()
        await srv.wait_closed()


async def _proxy_listen(api_url: str, name: str) -> tuple[str, int]:
    async with httpx.AsyncClient(base_url=api_url) as client:
        host, port = (await client.get(f"/proxies/{name}")).json()["listen"].rsplit(":", 1)
    return host, int(port)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), b"like toxiproxy-server"),
        (("--toxic", "latency:latency=5", "--api", "127.0.0.1:0"), b"--toxic needs --upstream"),
    ],
)
async def test_cli_without_upstream_says_what_is_missing(
    args: tuple[str, ...], message: bytes
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resilient_stream.cli", "proxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert message in err
