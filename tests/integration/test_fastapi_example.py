"""examples/fastapi_chat: served by hypercorn on 127.0.0.1:0 in front of the reference
server, driven by a real HTTP client. A browser that disconnects mid-stream cancels the
upstream stream; concurrent users share one StreamClient connection."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer

pytestmark = pytest.mark.timeout(60)

APP_PATH = Path(__file__).parents[2] / "examples" / "fastapi_chat" / "app.py"
FAST = StreamConfig(idle_timeout=0.5, backoff_initial=0.01, backoff_max=0.05)
MSGS = [{"role": "user", "content": "Why is the sky blue?"}]


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_chat_app", APP_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Run the ASGI app (lifespan included) with hypercorn on a port-0 socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    cfg = Config()
    cfg.bind = [f"fd://{sock.fileno()}"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 0.5
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, cfg, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    sock.detach()  # hypercorn owns (and closes) the listening socket from here
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as probe:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(url + "/")).status_code == 200:
                        break
                await asyncio.sleep(0.01)
            else:
                raise RuntimeError("the app did not start")
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def wait_until(cond: Any, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return bool(cond())


async def test_browser_disconnect_cancels_the_upstream_stream() -> None:
    # 2000 tokens at 200/s: 10 s of generation unless the disconnect stops it.
    async with ReferenceServer(stop_probability=0.0, tokens_per_second=200) as srv:
        app = load_example().create_app(srv.url, config=FAST)
        async with serve_app(app) as url:
            body = {"model": "m", "messages": MSGS, "options": {"num_predict": 2000}}
            lines: list[dict[str, Any]] = []
            async with httpx.AsyncClient(timeout=10) as browser:
                async with browser.stream("POST", url + "/api/chat", json=body) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"] == "application/x-ndjson"
                    async for line in response.aiter_lines():
                        lines.append(msgspec.json.decode(line))
                        if len(lines) == 5:
                            break
            # The browser is gone (its connection closed with the body half read).
            assert await wait_until(lambda: srv.stats.streams_cancelled_by_client == 1)
            assert await wait_until(lambda: srv.stats.streams_active == 0)
            generated = srv.stats.tokens_generated
            await asyncio.sleep(0.3)
            assert srv.stats.tokens_generated == generated  # stopped growing
            assert generated < 1000
            assert app.state.client.open_streams == 0
    assert all(not line["done"] and line["message"]["role"] == "assistant" for line in lines)


async def test_concurrent_users_share_one_client_and_get_complete_resumed_answers() -> None:
    opts = {"num_predict": 40}
    async with ReferenceServer(stop_probability=0.0) as srv:
        async with StreamClient(srv.url, config=FAST) as direct:
            expected = (await direct.chat(model="m", messages=MSGS, options=opts).collect()).text
    # Two of the upstream streams break mid-answer; the browsers never notice.
    plan = FaultSchedule(
        {
            1: Fault("reset_stream", after_tokens=10),
            3: Fault("error_line", after_tokens=20, message="llama runner process died"),
        }
    )
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        app = load_example().create_app(srv.url, config=FAST)
        async with serve_app(app) as url, httpx.AsyncClient(timeout=10) as browser:

            async def user() -> str:
                body = {"model": "m", "messages": MSGS, "options": opts}
                response = await browser.post(url + "/api/chat", json=body)
                assert response.status_code == 200
                chunks = [msgspec.json.decode(x) for x in response.text.splitlines()]
                assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] == 40
                return "".join(c["message"]["content"] for c in chunks)

            answers = await asyncio.gather(*(user() for _ in range(6)))
        assert srv.stats.connections_opened == 1  # one shared, multiplexed connection
        assert srv.stats.requests == 8  # 6 streams + 2 resumes
    assert answers == [expected] * 6


async def test_too_many_streams_get_503_with_retry_after() -> None:
    async with ReferenceServer(stop_probability=0.0, tokens_per_second=100) as srv:
        app = load_example().create_app(srv.url, config=FAST, max_streams=1)
        async with serve_app(app) as url, httpx.AsyncClient(timeout=10) as browser:
            body = {"model": "m", "messages": MSGS, "options": {"num_predict": 500}}
            async with browser.stream("POST", url + "/api/chat", json=body) as first:
                async for _ in first.aiter_lines():
                    break  # the first stream now holds the only slot
                second = await browser.post(url + "/api/chat", json=body)
            assert second.status_code == 503
            assert second.headers["retry-after"] == "1"
