"""Stall detection that counts records, not bytes, and is ready from the first chunks
(issue 10, items 8 and 9). Real sockets: a scripted HTTP/1.1 server on 127.0.0.1.

No wall-clock upper bounds: what is asserted is which mechanism ended the wait
(a StallError and the limit it applied) and what the server had done by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import pytest
from support.scripted_server import Reply, Request, ScriptedServer

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.refserver import ReferenceServer

pytestmark = pytest.mark.timeout(60)


def gen_line(text: str, **extra: object) -> bytes:
    return json.dumps({"response": text, **extra}).encode() + b"\n"


def applied_limit(outcome: str) -> float:
    """The idle limit a stall reported (policy output, not a measured time)."""
    match = re.search(r"idle timeout ([0-9.]+)s", outcome)
    assert match, outcome
    return float(match.group(1))


async def test_slowloris_body_trips_the_idle_timeout() -> None:
    """One byte every 20 ms inside one NDJSON line: each read used to re-arm the timer,
    so the stream was held until the body (or total_timeout) ended."""
    drip = {"bytes": 0, "at_resume": -1}

    async def handler(request: Request, reply: Reply) -> None:
        body = json.loads(request.body)
        await reply.start()
        if body["prompt"] == "p":
            await reply.send(gen_line("a"))
            try:
                for byte in b'{"response": "' + b"z" * 1500:  # bounded: ~30 s at most
                    await reply.send(bytes([byte]))
                    drip["bytes"] += 1
                    await asyncio.sleep(0.02)
            except ConnectionError:
                pass
            reply.drop()
            return
        drip["at_resume"] = drip["bytes"]
        await reply.send(gen_line("b") + gen_line("", done=True, done_reason="stop"))
        await reply.end()

    cfg = StreamConfig(
        http2=False, idle_timeout=0.5, backoff_initial=0.01, backoff_max=0.02, seam_overlap=0
    )
    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=cfg) as client:
        result = await client.generate(model="m", prompt="p", raw=True).collect()
    assert result.text == "ab" and result.resumes == 1
    assert result.history[0].outcome.startswith("StallError")
    # The stall ended the drip long before its 1500 bytes (unfixed: all of them).
    assert 0 <= drip["at_resume"] < 1500


async def test_early_stall_of_a_fast_stream_is_caught_by_the_warmup_timeout() -> None:
    """45 tokens/s, silent after 2 chunks: with the defaults the wait used the 30 s cap
    (the adaptive timeout had not warmed up); now it is idle_timeout_warmup (5 s)."""
    release = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        body = json.loads(request.body)
        await reply.start()
        if body["prompt"] == "p":
            for text in ("a", "b"):
                await reply.send(gen_line(text))
                await asyncio.sleep(1 / 45)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 40)  # a stall, bounded
            reply.drop()
            return
        release.set()
        await reply.send(gen_line("c") + gen_line("", done=True, done_reason="stop"))
        await reply.end()

    # the defaults, but HTTP/1.1 to this scripted server, whose answer depends on the
    # request's shape (so the request carries all of the partial output)
    cfg = StreamConfig(http2=False, seam_overlap=0)
    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=cfg) as client:
        result = await client.generate(model="m", prompt="p", raw=True).collect()
    assert result.text == "abc" and result.resumes == 1
    outcome = result.history[0].outcome
    assert outcome.startswith("StallError")
    assert applied_limit(outcome) <= 5.0  # the target: within 5 s at >= 10 tokens/s


async def test_healthy_slow_stream_is_never_mistaken_for_a_stall() -> None:
    """0.5 tokens/s (2 s gaps) with the defaults: no stall, one attempt."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        for text in ("a", "b", "c"):
            await reply.send(gen_line(text))
            await asyncio.sleep(2.0)
        await reply.send(gen_line("", done=True, done_reason="stop"))
        await reply.end()

    cfg = StreamConfig(http2=False)
    async with ScriptedServer(handler) as srv, StreamClient(srv.url, config=cfg) as client:
        result = await client.generate(model="m", prompt="p").collect()
    assert result.text == "abc"
    assert result.attempts == 1 and result.resumes == 0 and len(srv.requests) == 1


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
@pytest.mark.reference_server(tokens_per_second=200, stop_probability=0.0)
async def test_a_caller_slower_than_the_idle_limit_is_not_a_stall(
    reference_server: ReferenceServer, http2: bool
) -> None:
    """The wait for the next record starts when the last one is delivered, so a caller
    that spends longer than the idle limit over each chunk counts against it; records
    that came meanwhile are read without a wait, so it never stalls a healthy stream
    (over HTTP/2 our transport's stream is read directly, over HTTP/1.1 through httpx
    under the watchdog)."""
    cfg = StreamConfig(adaptive_idle_timeout=False, idle_timeout=0.3, http2=http2)
    async with StreamClient(reference_server.url, config=cfg) as client:
        stream = client.generate(model="m", prompt="p", options={"num_predict": 8, "seed": 1})
        chunks = 0
        async for _ in stream:
            chunks += 1
            await asyncio.sleep(0.4)  # longer than the idle limit, every chunk
        result = stream.result
    assert result.done and chunks >= 8
    assert result.attempts == 1 and result.resumes == 0, result.history
