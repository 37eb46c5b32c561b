"""``ResilientSyncTransport``: the sync twin of :class:`ResilientTransport`.

An :class:`httpx.BaseTransport` for ``ollama.Client``, ``openai.OpenAI`` and
plain ``httpx.Client``. It does not carry a second copy of the resume engine:
one event loop runs in a daemon thread owned by the transport, and the async
:class:`~resilient_stream.sdk.ResilientTransport` runs on it, so both transports
recognise the same calls, resume them with the same planners, verified seams,
retry policy and budgets, and answer with the same bytes. The calling thread
only hands requests over and pulls the body one read at a time (nothing is read
ahead of the SDK, so a closed response still cancels the upstream stream).

Every wait of the calling thread is bounded by the engine's own deadlines (the
stall timeouts and ``total_timeout`` of a resumed call; the SDK's timeouts on
what passes through); an interrupt of the calling thread (``KeyboardInterrupt``)
cancels the work on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx

from ..config import StreamConfig
from ..formats.openai.planner import Flavor
from ..result import StreamResult
from .transport import ResilientTransport

__all__ = ["ResilientSyncTransport"]

T = TypeVar("T")
_END = object()


class _Loop:
    """An event loop in a daemon thread, and a blocking call into it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name="resilient-stream-sync-transport", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it (an interrupt here cancels it)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise httpx.ReadError("the sync transport was closed") from None
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join()


async def _next(it: AsyncIterator[bytes]) -> object:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _END


class _SyncBody(httpx.SyncByteStream):
    """An async response body read from the loop, one read per ``next()``."""

    def __init__(self, loop: _Loop, body: httpx.AsyncByteStream) -> None:
        self._loop = loop
        self._body = body
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        it = self._body.__aiter__()
        call = self._loop.call
        while not self._closed:
            data = call(_next(it))
            if data is _END:
                return
            assert isinstance(data, bytes)
            yield data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.call(self._body.aclose())


class ResilientSyncTransport(httpx.BaseTransport):
    """Resumes the streaming calls it recognises; passes everything else through.

    Takes what :class:`ResilientTransport` takes: ``transport`` is the async
    transport the attempts and the pass-through requests go over (default: a
    :class:`~resilient_stream.transport.MultiplexedTransport`; HTTP/1.1 with
    ``StreamConfig(http2=False)``), ``config``, ``openai_flavor``,
    ``upgrade_non_streaming`` and ``on_resumed`` (called on this transport's thread).
    It runs them on its own event loop thread, started here and stopped by
    :meth:`close` (the httpx client that owns it calls it).
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        config: StreamConfig | None = None,
        openai_flavor: Flavor = "generic",
        upgrade_non_streaming: bool = True,
        on_resumed: Callable[[StreamResult], None] | None = None,
    ) -> None:
        if isinstance(transport, httpx.BaseTransport):
            raise TypeError(
                "ResilientSyncTransport wraps an async transport (it runs the async engine "
                "on its own loop): pass an httpx.AsyncBaseTransport, e.g. "
                "httpx.AsyncHTTPTransport(), or None for a MultiplexedTransport"
            )
        self._loop = _Loop()
        try:
            self._async = self._loop.call(
                _make(transport, config, openai_flavor, upgrade_non_streaming, on_resumed)
            )
        except BaseException:
            self._loop.stop()
            raise
        self.config = self._async.config
        self._closed = False

    @property
    def async_transport(self) -> ResilientTransport:
        """The async transport doing the work (its loop is this transport's thread)."""
        return self._async

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("ResilientSyncTransport is closed")
        content = request.read()
        inner = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=content,
            extensions=request.extensions,
        )
        response = self._loop.call(self._async.handle_async_request(inner))
        body = response.stream
        assert isinstance(body, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_SyncBody(self._loop, body),
            extensions=response.extensions,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.call(self._async.aclose())
        finally:
            self._loop.stop()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._loop.stop()  # no upstream left open by a dropped transport's thread


async def _make(
    transport: httpx.AsyncBaseTransport | None,
    config: StreamConfig | None,
    flavor: Flavor,
    upgrade: bool,
    on_resumed: Callable[[StreamResult], None] | None,
) -> ResilientTransport:
    """Built on the loop: the wrapped transport binds to the loop it is made on."""
    return ResilientTransport(
        transport,
        config=config,
        openai_flavor=flavor,
        upgrade_non_streaming=upgrade,
        on_resumed=on_resumed,
    )
