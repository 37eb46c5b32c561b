"""Typed failures of MultiplexedTransport against the reference server's faults (real sockets)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from support.transport_servers import draining_h2_server

from resilient_stream import errors
from resilient_stream.refserver.faults import Fault, RequestInfo
from resilient_stream.refserver.server import ReferenceServer
from resilient_stream.transport import MultiplexedTransport


def fault_for(prompt: str, fault: Fault) -> object:
    def plan(info: RequestInfo) -> Fault | None:
        return fault if info.body.get("prompt") == prompt else None

    return plan


async def generate(client: httpx.AsyncClient, url: str, prompt: str, n: int = 10) -> list[bytes]:
    body = {"model": "m", "prompt": prompt, "options": {"num_predict": n}}
    async with client.stream("POST", url + "/api/generate", json=body) as response:
        assert response.status_code == 200
        data = b"".join([d async for d in response.aiter_raw()])
        return data.splitlines()


@pytest.mark.timeout(30)
async def test_server_rst_stream_fails_only_that_stream() -> None:
    plan = fault_for("victim", Fault("reset_stream", after_tokens=3))
    async with ReferenceServer(tokens_per_second=50, stop_probability=0.0, faults=plan) as srv:
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            results = await asyncio.gather(
                generate(client, srv.url, "victim"),
                *(generate(client, srv.url, f"p{i}") for i in range(10)),
                return_exceptions=True,
            )
            assert transport.stats().connections_opened == 1
        victim, *others = results
        assert isinstance(victim, errors.StreamResetError)
        assert not isinstance(victim, errors.RefusedStreamError)
        assert victim.error_code == 2  # INTERNAL_ERROR
        assert victim.retryable
        for lines in others:
            assert isinstance(lines, list)
            assert len(lines) == 11 and b'"done":true' in lines[-1].replace(b" ", b"")


@pytest.mark.timeout(30)
async def test_connection_loss_fails_every_stream_on_it_with_a_retryable_error() -> None:
    plan = fault_for("victim", Fault("drop_connection", after_tokens=3))
    async with ReferenceServer(tokens_per_second=50, stop_probability=0.0, faults=plan) as srv:
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            results = await asyncio.gather(
                generate(client, srv.url, "victim", n=50),
                *(generate(client, srv.url, f"p{i}", n=50) for i in range(10)),
                return_exceptions=True,
            )
            for result in results:
                assert isinstance(result, errors.ConnectionLostError), result
                assert isinstance(result, httpx.TransportError)
                assert result.retryable
                assert "closed" in str(result)
            assert transport.stats().streams_active == 0
            # The next request opens a fresh connection.
            assert len(await generate(client, srv.url, "again", n=3)) == 4
            assert transport.stats().connections_opened == 2


@pytest.mark.timeout(30)
async def test_goaway_retries_unprocessed_streams_and_types_the_processed_one() -> None:
    # Stock httpx fails every stream in flight on GOAWAY (httpx #3324).
    seen: set[str] = set()

    def plan(info: RequestInfo) -> Fault | None:
        prompt = str(info.body.get("prompt"))
        first_time = prompt not in seen
        seen.add(prompt)
        if prompt == "victim":
            return Fault("goaway", after_tokens=10, last_stream_id=1)
        # The others wait (no headers) on the first connection, like queued requests.
        return Fault("never_answer") if first_time else None

    async with ReferenceServer(tokens_per_second=50, stop_probability=0.0, faults=plan) as srv:
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            victim = asyncio.create_task(generate(client, srv.url, "victim", n=50))  # stream 1
            await asyncio.sleep(0.05)
            others = [generate(client, srv.url, f"p{i}", n=20) for i in range(10)]  # 3, 5, ...
            results = await asyncio.gather(*others)
            for lines in results:  # retried on a new connection, invisibly
                assert len(lines) == 21
            with pytest.raises(errors.GoAwayError) as info:
                await victim
            assert info.value.processed  # at or below last_stream_id: maybe processed
            assert info.value.last_stream_id == 1
            assert info.value.retryable
            # The GOAWAY connection took no new stream: a second one carried the retries.
            assert transport.stats().connections_opened == 2
            assert transport.stats().streams_active == 0
            assert srv.stats.requests == 21


@pytest.mark.timeout(30)
async def test_graceful_goaway_lets_streams_in_flight_finish() -> None:
    # Stock httpx kills the streams in flight (httpx #3324); h2 closes its state machine
    # on GOAWAY (h2#1181). We keep draining the streams at or below last_stream_id.
    async with draining_h2_server(goaway_after=5, lines=10, rate=10) as (url, completed):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:

            async def one() -> int:
                async with client.stream("POST", url + "/gen", json={}) as r:
                    return (await r.aread()).count(b"\n")

            tasks = [asyncio.create_task(one()) for _ in range(5)]
            await asyncio.sleep(0.3)  # GOAWAY has arrived; the streams are mid-way
            assert transport.stats().streams_active == 5
            assert await asyncio.gather(*tasks) == [11] * 5
            assert sorted(completed) == [1, 3, 5, 7, 9]
            # A new request does not go to the GOAWAY connection.
            assert await one() == 11
            assert transport.stats().connections_opened == 2


@pytest.mark.timeout(30)
async def test_early_close_sends_rst_stream_and_the_reference_server_stops_generating() -> None:
    async with ReferenceServer(tokens_per_second=100, stop_probability=0.0) as srv:
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            body = {"model": "m", "prompt": "x", "options": {"num_predict": 1000}}
            async with client.stream("POST", srv.url + "/api/generate", json=body) as r:
                async for _ in r.aiter_raw():
                    break
            for _ in range(100):
                if srv.stats.streams_cancelled_by_client:
                    break
                await asyncio.sleep(0.02)
            assert srv.stats.streams_cancelled_by_client == 1
            tokens = srv.stats.tokens_generated
            await asyncio.sleep(0.2)
            assert srv.stats.tokens_generated == tokens
            assert srv.stats.streams_active == 0
            assert transport.stats().streams_active == 0


@pytest.mark.timeout(30)
async def test_refused_stream_is_retried_transparently() -> None:
    # RST_STREAM(REFUSED_STREAM) means "never processed": safe to send again at once.
    async with draining_h2_server(goaway_after=0, lines=3, rate=100, refuse_first=2) as (
        url,
        completed,
    ):
        transport = MultiplexedTransport()
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            r = await client.post(url + "/gen", json={})
            assert r.status_code == 200
            assert r.content.count(b"\n") == 4
            assert completed == [5]  # streams 1 and 3 were refused, 5 was served
            assert transport.stats().streams_active == 0
