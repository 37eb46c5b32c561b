"""StreamClient against servers that refuse or drain forever: bounded, typed, charged.

A stream the server never processed (RST_STREAM(REFUSED_STREAM), GOAWAY with
last_stream_id=0) is retried at once and for free the first time (gRPC's transparent
retry). When it repeats, the retries are ordinary ones: they count as attempts, back
off, and charge the replica's retry budget, so one stream sends at most a few dozen
requests and ends with a typed error naming the cause. The servers (raw asyncio + h2,
real sockets) are in test_transport_hostile.py; each stops misbehaving after
STORM_CAP requests or connections so a storming client still finishes.
"""

from __future__ import annotations

from typing import Any

import h2.connection
import h2.errors
import pytest
from support.hostile_h2 import (
    STORM_CAP,
    Seen,
    _serve,
    goaway_on_connect,
    goaway_on_request,
    h2_server,
    refuse_forever,
)

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.errors import AttemptsExhausted, StreamError
from resilient_stream.transport.multiplexed import MAX_TRANSPARENT_RETRIES

FAST: dict[str, Any] = {"backoff_initial": 0.001, "backoff_max": 0.01}
#: What "a few dozen" means with the default max_attempts (8): each attempt is one
#: request plus the transport's own bounded resends.
FEW_DOZEN = 40


@pytest.mark.timeout(60)
async def test_stream_against_a_server_refusing_every_stream_ends_typed_and_bounded() -> None:
    cfg = StreamConfig(**FAST)
    async with h2_server(on_request=refuse_forever) as (url, seen):
        async with StreamClient(url, config=cfg) as client:
            stream = client.generate(model="m", prompt="x")
            with pytest.raises(StreamError) as info:
                await stream.collect()
            tokens_left = client.replicas.replicas[0].budget.tokens
    assert seen.served == 0, f"stormed: {seen.requests} requests"
    assert seen.requests <= FEW_DOZEN
    assert seen.requests <= cfg.max_attempts * (MAX_TRANSPARENT_RETRIES + 1)
    assert isinstance(info.value, AttemptsExhausted)
    assert "REFUSED_STREAM" in str(info.value)
    assert stream.result.attempts == cfg.max_attempts
    # Charged like any failure: the replica's retry budget paid for the retries.
    assert tokens_left <= cfg.retry_budget_tokens - cfg.max_attempts


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["on_connect", "on_request"])
async def test_stream_against_a_server_draining_every_connection_opens_a_bounded_number(
    when: str,
) -> None:
    cfg = StreamConfig(**FAST)
    hooks = (
        {"on_connect": goaway_on_connect}
        if when == "on_connect"
        else {"on_request": goaway_on_request}
    )
    async with h2_server(**hooks) as (url, seen):
        async with StreamClient(url, config=cfg) as client:
            stream = client.generate(model="m", prompt="x")
            with pytest.raises(StreamError) as info:
                await stream.collect()
    assert seen.served == 0, f"stormed: {seen.connections} connections"
    assert seen.connections <= FEW_DOZEN
    assert seen.connections <= cfg.max_attempts * (MAX_TRANSPARENT_RETRIES + 1)
    assert isinstance(info.value, AttemptsExhausted)
    assert "GOAWAY" in str(info.value) and "not processed" in str(info.value)


@pytest.mark.timeout(60)
async def test_refused_after_the_response_headers_is_bounded_too() -> None:
    # Headers, then RST_STREAM(REFUSED_STREAM): the break happens mid-attempt, where the
    # transport has already handed the response over; the attempt loop bounds it.
    def headers_then_refuse(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
        if seen.requests > STORM_CAP:
            _serve(conn, sid)
            seen.served += 1
            return b""
        conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/x-ndjson")])
        conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        return b""

    cfg = StreamConfig(**FAST)
    async with h2_server(on_request=headers_then_refuse) as (url, seen):
        async with StreamClient(url, config=cfg) as client:
            stream = client.generate(model="m", prompt="x")
            with pytest.raises(StreamError) as info:
                await stream.collect()
    assert seen.served == 0, f"stormed: {seen.requests} requests"
    assert seen.requests <= cfg.max_attempts + 1
    assert "REFUSED_STREAM" in str(info.value)


@pytest.mark.timeout(60)
async def test_a_one_off_refusal_costs_the_stream_no_attempt() -> None:
    def refuse_first(conn: h2.connection.H2Connection, sid: int, seen: Seen) -> bytes:
        if seen.requests == 1:
            conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        else:
            _serve(conn, sid)
            seen.served += 1
        return b""

    cfg = StreamConfig(**FAST)
    async with h2_server(on_request=refuse_first) as (url, seen):
        async with StreamClient(url, config=cfg) as client:
            stream = client.generate(model="m", prompt="x")
            result = await stream.collect()
            tokens_left = client.replicas.replicas[0].budget.tokens
    assert result.text == "t0 t1 t2 "
    assert result.attempts == 1
    assert (seen.requests, seen.served) == (2, 1)
    assert tokens_left == cfg.retry_budget_tokens
