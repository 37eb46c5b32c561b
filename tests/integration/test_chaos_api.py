"""The toxiproxy-compatible REST API, driven by httpx and by the toxiproxy-python client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from resilient_stream.chaos import ApiServer, ChaosProxy, ProxyRegistry


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    srv.close()
    await srv.wait_closed()


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    async with ApiServer(ProxyRegistry(seed=3), port=0) as server:
        yield server


async def round_trip(host: str, port: int) -> float:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        start = time.perf_counter()
        writer.write(b"ping")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        return time.perf_counter() - start
    finally:
        writer.close()


@pytest.mark.timeout(20)
async def test_rest_api_speaks_toxiproxy_json_shapes(api: ApiServer, upstream: str) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        r = await c.post("/proxies", json={"name": "e", "upstream": upstream})
        assert r.status_code == 201
        proxy = r.json()
        assert set(proxy) == {"name", "listen", "upstream", "enabled", "toxics"}
        assert proxy["listen"].startswith("127.0.0.1:") and proxy["enabled"] is True
        assert (
            await c.post("/proxies", json={"name": "e", "upstream": upstream})
        ).status_code == 409

        toxic = {"type": "latency", "stream": "upstream", "attributes": {"latency": 50}}
        r = await c.post("/proxies/e/toxics", json=toxic)
        assert r.status_code == 200
        assert r.json() == {
            "type": "latency",
            "name": "latency_upstream",
            "stream": "upstream",
            "toxicity": 1.0,
            "attributes": {"latency": 50, "jitter": 0},
        }
        assert (await c.post("/proxies/e/toxics", json=toxic)).status_code == 409
        bad = await c.post("/proxies/e/toxics", json={"type": "nope"})
        assert bad.status_code == 400 and "unknown toxic type" in bad.json()["error"]
        # an unknown attribute is ignored (as toxiproxy does); a bad value is refused
        bad = await c.post(
            "/proxies/e/toxics", json={"type": "latency", "attributes": {"latency": -1}}
        )
        assert bad.status_code == 400

        r = await c.post("/proxies/e/toxics/latency_upstream", json={"attributes": {"jitter": 5}})
        assert r.json()["attributes"] == {"latency": 50, "jitter": 5}
        assert (await c.get("/proxies/e/toxics")).json()[0]["name"] == "latency_upstream"
        assert (await c.get("/proxies")).json()["e"]["toxics"][0]["type"] == "latency"

        host, port = proxy["listen"].rsplit(":", 1)
        assert await round_trip(host, int(port)) >= 0.04
        faults = (await c.get("/proxies/e/faults")).json()
        assert faults[0]["kind"] == "latency" and faults[0]["connection"] == 0

        r = await c.delete("/proxies/e/toxics/latency_upstream")
        assert r.status_code == 204
        assert (await c.get("/proxies/e/toxics/latency_upstream")).status_code == 404

        r = await c.post("/proxies/e", json={"enabled": False})
        assert r.json()["enabled"] is False
        with pytest.raises(OSError):
            await asyncio.open_connection(host, int(port))
        assert (await c.post("/reset")).status_code == 204
        assert (await c.get("/proxies/e")).json()["enabled"] is True
        await round_trip(host, int(port))  # relays again (round_trip checks the echo)

        assert "toxiproxy API" in (await c.get("/version")).json()["version"]
        assert (await c.delete("/proxies/e")).status_code == 204
        assert (await c.get("/proxies/e")).status_code == 404


@pytest.mark.timeout(10)
async def test_rest_api_refuses_non_loopback_listen_addresses(
    api: ApiServer, upstream: str
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        r = await c.post(
            "/proxies", json={"name": "x", "upstream": upstream, "listen": "0.0.0.0:0"}
        )
        assert r.status_code == 400 and "loopback" in r.json()["error"]
    with pytest.raises(ValueError, match="loopback"):
        ApiServer(host="0.0.0.0")


@pytest.mark.timeout(10)
async def test_rest_api_serves_a_proxy_started_from_python(upstream: str) -> None:
    async with ChaosProxy(upstream, ["slicer:average_size=2"], name="py", seed=1) as proxy:
        registry = ProxyRegistry()
        registry.add(proxy)
        async with ApiServer(registry) as server, httpx.AsyncClient(base_url=server.url) as c:
            body = (await c.get("/proxies/py")).json()
            assert body["listen"] == proxy.listen
            assert body["toxics"][0]["attributes"] == {
                "average_size": 2,
                "size_variation": 0,
                "delay": 0,
            }


@pytest.mark.timeout(30)
async def test_toxiproxy_python_client_creates_a_proxy_and_a_latency_toxic(
    api: ApiServer, upstream: str
) -> None:
    toxiproxy = pytest.importorskip("toxiproxy")

    def drive() -> dict[str, Any]:
        server = toxiproxy.Toxiproxy()
        server.update_api_consumer(api.host, api.port)
        assert server.running()
        proxy = server.create(upstream=upstream, name="tp", listen="127.0.0.1:0")
        proxy.add_toxic(type="latency", attributes={"latency": 100})
        toxics = proxy.toxics()
        return {
            "listen": proxy.listen,
            "toxics": {n: (t.type, t.stream, t.attributes) for n, t in toxics.items()},
            "proxies": sorted(server.proxies()),
            "version": server.version(),
        }

    seen = await asyncio.to_thread(drive)
    assert seen["proxies"] == ["tp"]
    assert seen["toxics"] == {
        "latency_downstream": ("latency", "downstream", {"latency": 100, "jitter": 0})
    }
    assert b"toxiproxy API" in seen["version"]
    host, port = seen["listen"].rsplit(":", 1)
    assert await round_trip(host, int(port)) >= 0.099

    def cleanup() -> None:
        server = toxiproxy.Toxiproxy()
        proxy = server.get_proxy("tp")
        assert proxy.destroy_toxic("latency_downstream")
        assert server.destroy(proxy)
        assert server.proxies() == {}

    await asyncio.to_thread(cleanup)


# --- guard against web pages (issue 10, item 13) -----------------------------------------


@pytest.mark.timeout(20)
async def test_rest_api_answers_browser_user_agents_403_like_toxiproxy(
    api: ApiServer, upstream: str
) -> None:
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    async with httpx.AsyncClient(base_url=api.url) as c:
        r = await c.get("/proxies", headers={"User-Agent": firefox})
        assert r.status_code == 403
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.text == "User agent not allowed\n"  # toxiproxy's exact answer
        r = await c.post(
            "/proxies", json={"name": "b", "upstream": upstream}, headers={"User-Agent": firefox}
        )
        assert r.status_code == 403
        # toxiproxy matches the prefix "Mozilla/" exactly; other agents pass
        for agent in ("python-httpx/0.28", "curl/8.5.0", "mozilla/5.0", "Mozilla"):
            assert (await c.get("/proxies", headers={"User-Agent": agent})).status_code == 200
        assert (await c.get("/proxies")).json() == {}


@pytest.mark.timeout(20)
async def test_rest_api_refuses_a_foreign_host_header(api: ApiServer, upstream: str) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        # The reproduction: a text/plain POST (a "simple" request any web page
        # can send) with a foreign Host (DNS rebinding) created a proxy and a toxic.
        body = msgspec.json.encode({"name": "evil", "upstream": upstream})
        for host in ("evil.example:8474", f"evil.example:{api.port}", "evil.example", "10.0.0.1"):
            r = await c.post(
                "/proxies", content=body, headers={"Host": host, "Content-Type": "text/plain"}
            )
            assert r.status_code == 403, host
            assert r.json()["status"] == 403 and "Host" in r.json()["error"]
            r = await c.post(
                "/proxies", json={"name": "evil", "upstream": upstream}, headers={"Host": host}
            )
            assert r.status_code == 403, host
        assert (await c.get("/proxies")).json() == {}
        for host in (
            f"127.0.0.1:{api.port}",
            f"localhost:{api.port}",
            f"LOCALHOST:{api.port}",
            f"[::1]:{api.port}",
            f"{api.host}:{api.port}",
            "localhost",
            "localhost:18474",  # an ssh / kubectl port-forward changes the port the client sees
        ):
            r = await c.get("/version", headers={"Host": host})
            assert r.status_code == 200, host
        r = await c.post(
            "/proxies",
            json={"name": "ok", "upstream": upstream},
            headers={"Host": f"localhost:{api.port}"},
        )
        assert r.status_code == 201


@pytest.mark.timeout(20)
async def test_rest_api_refuses_a_foreign_origin(api: ApiServer, upstream: str) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        for origin in ("http://evil.example", "https://evil.example:8474", "null", "file://"):
            r = await c.post(
                "/proxies", json={"name": "o", "upstream": upstream}, headers={"Origin": origin}
            )
            assert r.status_code == 403, origin
            assert "Origin" in r.json()["error"]
            assert (await c.get("/proxies", headers={"Origin": origin})).status_code == 403
        assert (await c.get("/proxies")).json() == {}
        for origin in (
            f"http://127.0.0.1:{api.port}",
            f"http://localhost:{api.port}",
            f"http://[::1]:{api.port}",
        ):
            assert (await c.get("/version", headers={"Origin": origin})).status_code == 200


@pytest.mark.timeout(20)
async def test_rest_api_refuses_non_json_content_types(api: ApiServer, upstream: str) -> None:
    body = msgspec.json.encode({"name": "t", "upstream": upstream})
    async with httpx.AsyncClient(base_url=api.url) as c:
        for ctype in (
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ):
            r = await c.post("/proxies", content=body, headers={"Content-Type": ctype})
            assert r.status_code == 415, ctype
            assert r.json() == {"error": r.json()["error"], "status": 415}
            assert "application/json" in r.json()["error"]
        assert (await c.get("/proxies")).json() == {}
        # JSON (with or without parameters) and a body without a Content-Type are fine
        r = await c.post(
            "/proxies", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert r.status_code == 201
        toxic = msgspec.json.encode({"type": "latency", "attributes": {"latency": 1}})
        r = await c.post("/proxies/t/toxics", content=toxic, headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        assert (await c.get("/proxies/t/toxics")).json() == []
        assert (await c.post("/proxies/t/toxics", content=toxic)).status_code == 200
        r = await c.post("/reset", content=b"", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        assert len((await c.get("/proxies/t/toxics")).json()) == 1
        assert (await c.post("/reset")).status_code == 204


# --- parity with toxiproxy where its clients notice ----------------------------------------


@pytest.mark.timeout(20)
async def test_rest_api_accepts_and_ignores_unknown_toxic_attributes(
    api: ApiServer, upstream: str
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        assert (
            await c.post("/proxies", json={"name": "u", "upstream": upstream})
        ).status_code == 201
        r = await c.post(
            "/proxies/u/toxics",
            json={"type": "latency", "attributes": {"latency": 50, "bogus": 1}, "extra": True},
        )
        assert r.status_code == 200
        assert r.json()["attributes"] == {"latency": 50, "jitter": 0}
        r = await c.post(
            "/proxies/u/toxics/latency_downstream", json={"attributes": {"jitter": 5, "zzz": 9}}
        )
        assert r.status_code == 200
        assert r.json()["attributes"] == {"latency": 50, "jitter": 5}
        r = await c.patch("/proxies/u/toxics/latency_downstream", json={"attributes": {"q": 1}})
        assert r.status_code == 200 and r.json()["attributes"] == {"latency": 50, "jitter": 5}
        # a known attribute with a bad value is still refused
        r = await c.post(
            "/proxies/u/toxics/latency_downstream", json={"attributes": {"latency": -1}}
        )
        assert r.status_code == 400


@pytest.mark.timeout(20)
async def test_rest_api_reports_slicer_defaults_as_toxiproxy_does(
    api: ApiServer, upstream: str
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        proxy = (await c.post("/proxies", json={"name": "s", "upstream": upstream})).json()
        r = await c.post("/proxies/s/toxics", json={"type": "slicer"})
        assert r.status_code == 200
        # toxiproxy's SlicerToxic fields are Go zero values: average_size 0
        assert r.json()["attributes"] == {"average_size": 0, "size_variation": 0, "delay": 0}
    # ... and here the default slicer still carries every byte (in 1-byte pieces)
    host, port = proxy["listen"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"hello world")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(11), 5) == b"hello world"
    finally:
        writer.close()


async def _dropped(reader: asyncio.StreamReader) -> bool:
    """The peer closed the connection (FIN or RST); waits 5 s at most."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def _echoes(host: str, port: int) -> bool:
    try:
        await round_trip(host, port)
    except OSError:
        return False
    return True


@pytest.mark.timeout(30)
async def test_rest_api_moves_a_proxy_to_a_new_listen_address(
    api: ApiServer, upstream: str
) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        created = (await c.post("/proxies", json={"name": "mv", "upstream": upstream})).json()
        await c.post("/proxies/mv/toxics", json={"type": "latency", "attributes": {"latency": 1}})
        old_host, old_port = created["listen"].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(old_host, int(old_port))
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"

        # the same address: nothing moves, the open connection stays
        r = await c.post("/proxies/mv", json={"listen": created["listen"]})
        assert r.status_code == 200 and r.json()["listen"] == created["listen"]
        writer.write(b"y")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"y"

        # a new address (port 0: any free one, as toxiproxy resolves it): the proxy
        # stops listening on the old one, drops its connections and listens anew
        r = await c.post("/proxies/mv", json={"listen": "127.0.0.1:0"})
        assert r.status_code == 200
        moved = r.json()
        assert moved["listen"] != created["listen"] and moved["enabled"] is True
        assert moved["toxics"][0]["type"] == "latency"
        assert await _dropped(reader)
        writer.close()
        new_host, new_port = moved["listen"].rsplit(":", 1)
        assert await _echoes(new_host, int(new_port))
        assert (await c.get("/proxies/mv")).json()["listen"] == moved["listen"]

        # non-loopback: refused, nothing changes
        r = await c.post("/proxies/mv", json={"listen": "0.0.0.0:0"})
        assert r.status_code == 400 and "loopback" in r.json()["error"]
        assert (await c.get("/proxies/mv")).json()["listen"] == moved["listen"]

        # an address in use: 500 and the proxy is left disabled on it, as toxiproxy does
        r = await c.post("/proxies/mv", json={"listen": upstream})
        assert r.status_code == 500 and r.json()["status"] == 500
        after = (await c.get("/proxies/mv")).json()
        assert after["enabled"] is False and after["listen"] == upstream
        assert not await _echoes(new_host, int(new_port))

        # a disabled proxy takes the new address and listens there once enabled
        r = await c.post("/proxies/mv", json={"listen": "127.0.0.1:0", "enabled": True})
        assert r.status_code == 200 and r.json()["enabled"] is True
        host, port = r.json()["listen"].rsplit(":", 1)
        assert int(port) != 0 and await _echoes(host, int(port))


@pytest.mark.timeout(30)
async def test_rest_api_populate_errors_have_toxiproxy_shape(api: ApiServer, upstream: str) -> None:
    async with httpx.AsyncClient(base_url=api.url) as c:
        # every entry is checked before any proxy is made
        r = await c.post(
            "/populate", json=[{"name": "p1", "upstream": upstream}, {"upstream": upstream}]
        )
        assert r.status_code == 400
        assert r.json() == {
            "error": "missing required field: name at proxy 2",
            "status": 400,
            "proxies": None,
        }
        r = await c.post("/populate", json=[{"name": "p1", "upstream": upstream}, {"name": "p2"}])
        assert r.json()["error"] == "missing required field: upstream at proxy 2"
        assert (await c.get("/proxies")).json() == {}

        r = await c.post("/populate", content=b"not json")
        assert r.status_code == 400
        assert set(r.json()) == {"error", "status", "proxies"}
        assert r.json()["error"].startswith("bad request body: ")
        assert r.json()["status"] == 400 and r.json()["proxies"] is None

        # a proxy that cannot listen: the error, and the proxies made before it
        r = await c.post(
            "/populate",
            json=[
                {"name": "p1", "upstream": upstream},
                {"name": "p2", "upstream": upstream, "listen": upstream},
            ],
        )
        assert r.status_code == 500
        body = r.json()
        assert body["status"] == 500 and body["error"]
        assert [p["name"] for p in body["proxies"]] == ["p1"]
        assert sorted((await c.get("/proxies")).json()) == ["p1"]

        r = await c.post("/populate", json=[{"name": "p3", "upstream": upstream}])
        assert r.status_code == 201 and set(r.json()) == {"proxies"}
