"""Per-origin pool of HTTP/2 connections.

A request takes a *slot* on the least-loaded connection that has one; when every
connection is full (the server's SETTINGS_MAX_CONCURRENT_STREAMS, or our own
``max_streams_per_connection``), another connection is opened, up to
``max_connections``. Past that, requests wait for a slot at most ``pool_timeout``
and then fail with :class:`PoolTimeout` (stock httpcore queues them forever on a
single connection).

A connection still handshaking counts with the capacity last seen for the origin,
so a burst of requests shares it instead of opening ``max_connections`` sockets at
once. Connections idle for ``keepalive_expiry`` are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import Any

from ..errors import ConnectError, ConnectTimeout, PoolTimeout
from ..logging import library_logger
from .connection import H2ClientConnection
from .h2setup import (
    CONNECTION_OPENED,
    ORIGIN_HTTP1_FALLBACK,
    ConnectionSettings,
    NotHttp2Error,
)
from .timeouts import HeadersDeadline

#: Capacity assumed for a connection before the server's SETTINGS arrive.
_DEFAULT_GUESS = 100


class UseHttp1(Exception):
    """This origin does not speak HTTP/2; the transport falls back to HTTP/1.1."""


class OriginPool:
    """Connections to one (scheme, host, port)."""

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int,
        settings: ConnectionSettings,
        max_connections: int,
        keepalive_expiry: float,
        ssl_context: ssl.SSLContext | None,
        log: Any = None,
    ) -> None:
        self.log: Any = log if log is not None else library_logger("warning")
        self.scheme = scheme
        self.host = host
        self.port = port
        self.endpoint = f"{scheme}://{host}:{port}"
        self.settings = settings
        self.max_connections = max(1, max_connections)
        self.keepalive_expiry = keepalive_expiry
        self.ssl_context = ssl_context
        self.connections: list[H2ClientConnection] = []
        self.http1 = False  # learned: the origin does not speak h2
        self.connections_opened = 0
        self._guess = max(1, min(settings.max_streams, _DEFAULT_GUESS))
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- slots ------------------------------------------------------------------

    async def acquire(
        self,
        pool_timeout: float | None,
        connect_timeout: float,
        headers: HeadersDeadline | None = None,
    ) -> H2ClientConnection:
        """Reserve a stream slot on a ready connection (opening one if allowed).

        ``headers``: the request's headers deadline; a wait here (for a slot, for a
        handshake) that outlasts it ends with its error."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        lost = 0  # connections that closed between their handshake and our stream
        while True:
            if self.http1:
                raise UseHttp1(self.endpoint)
            conn = self._reserve(loop, connect_timeout)
            if conn is None:
                if deadline is None:
                    deadline = loop.time() + (pool_timeout if pool_timeout is not None else 1e9)
                await self._wait_for_slot(loop, deadline, pool_timeout, headers)
                continue
            if not conn.ready.done():
                try:
                    async with asyncio.timeout_at(headers.until if headers else None):
                        await asyncio.shield(conn.ready)
                except BaseException as failed:
                    self.release(conn)
                    if isinstance(conn.close_reason, NotHttp2Error):
                        self._mark_http1(conn.close_reason)
                        raise UseHttp1(self.endpoint) from None
                    if headers is not None and isinstance(failed, TimeoutError):
                        raise headers.error(self.endpoint, "the connection's handshake") from None
                    raise
            exc = conn.ready.exception()
            if exc is not None:
                self.release(conn)
                if isinstance(exc, NotHttp2Error):
                    self._mark_http1(exc)
                    raise UseHttp1(self.endpoint) from None
                raise exc
            if conn.usable:
                return conn
            self.release(conn)
            if conn.goaway:
                # Drained before our stream went out (e.g. GOAWAY right after SETTINGS):
                # never processed; the transport's bounded resend policy decides, so a
                # server that drains every new connection gets no connection storm.
                raise conn.unsent_error()
            lost += 1
            if lost > 1 and conn.close_reason is not None:
                raise conn.close_reason
            # closed while we waited (a one-off race): pick again, once

    def _mark_http1(self, why: BaseException) -> None:
        if not self.http1:
            self.http1 = True
            self.log.info(ORIGIN_HTTP1_FALLBACK, endpoint=self.endpoint, reason=str(why))

    def _reserve(
        self, loop: asyncio.AbstractEventLoop, connect_timeout: float
    ) -> H2ClientConnection | None:
        best: H2ClientConnection | None = None
        usable = 0
        for conn in self.connections:
            if not conn.usable:
                continue
            usable += 1
            limit = conn.capacity if conn.ready.done() else min(conn.capacity, self._guess)
            if conn.reserved < limit and (best is None or conn.reserved < best.reserved):
                best = conn
        if best is None and usable < self.max_connections:
            best = self._open(loop, connect_timeout)
        if best is not None:
            best.reserved += 1
            if best.idle_handle is not None:
                best.idle_handle.cancel()
                best.idle_handle = None
        return best

    async def _wait_for_slot(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        pool_timeout: float | None,
        headers: HeadersDeadline | None,
    ) -> None:
        # the request's headers bound, where it ends the wait before pool_timeout does
        cut = headers if headers is not None and headers.until < deadline else None
        if cut is not None:
            deadline = cut.until
        remaining = deadline - loop.time()
        if remaining <= 0:
            if cut is not None:
                raise cut.error(self.endpoint, "a stream slot")
            raise self._pool_timeout(pool_timeout)
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        woken = False
        try:
            async with asyncio.timeout(remaining):
                await waiter
            woken = True
        except TimeoutError:
            if cut is not None:
                raise cut.error(self.endpoint, "a stream slot") from None
            raise self._pool_timeout(pool_timeout) from None
        finally:
            if not waiter.done():
                waiter.cancel()
            elif not woken and not waiter.cancelled():
                self._wake(1)  # we were handed a free slot but leave: pass it on
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _pool_timeout(self, pool_timeout: float | None) -> PoolTimeout:
        busy = sum(c.reserved for c in self.connections)
        return PoolTimeout(
            f"no HTTP/2 stream slot free within pool_timeout={pool_timeout}s "
            f"({len(self.connections)} connections, {busy} streams busy, "
            f"max_connections={self.max_connections})",
            endpoint=self.endpoint,
        )

    def release(self, conn: H2ClientConnection) -> None:
        """A slot on ``conn`` is free again."""
        conn.reserved -= 1
        self._wake(1)
        if conn.reserved == 0 and conn.usable and conn.idle_handle is None:
            loop = conn.loop
            conn.idle_handle = loop.call_later(self.keepalive_expiry, self._expire, conn)

    def _wake(self, n: int) -> None:
        waiters = self._waiters
        while n > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    def _expire(self, conn: H2ClientConnection) -> None:
        conn.idle_handle = None
        if conn.reserved == 0:
            conn.close()

    # --- connection lifecycle ---------------------------------------------------------

    def capacity_changed(self, conn: H2ClientConnection) -> None:
        self._guess = max(1, conn.capacity)
        free = conn.capacity - conn.reserved
        if free > 0:
            self._wake(free)

    def connection_unusable(self, conn: H2ClientConnection) -> None:
        """GOAWAY or failure: waiters may now open a replacement."""
        self._wake(1)

    def connection_closed(self, conn: H2ClientConnection) -> None:
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)
        self._wake(1)

    def _open(self, loop: asyncio.AbstractEventLoop, connect_timeout: float) -> H2ClientConnection:
        conn = H2ClientConnection(self, self.settings, loop, self.endpoint)
        self.connections.append(conn)
        self.connections_opened += 1
        task = loop.create_task(self._connect(conn, connect_timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def _connect(self, conn: H2ClientConnection, connect_timeout: float) -> None:
        loop = conn.loop
        tls = self.scheme == "https"
        try:
            async with asyncio.timeout(connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl_context if tls else None,
                    server_hostname=self.host if tls else None,
                )
                if tls:
                    ssl_object = transport.get_extra_info("ssl_object")
                    alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
                    if alpn != "h2":
                        transport.close()  # a clean TLS close; abort() below skips it
                        conn.abort(NotHttp2Error(f"{self.endpoint} chose ALPN {alpn!r}"))
                        return
                await asyncio.shield(conn.ready)
            self.log.debug(
                CONNECTION_OPENED,
                endpoint=self.endpoint,
                connections=len(self.connections),
                max_concurrent_streams=conn.capacity,
            )
        except TimeoutError:
            conn.abort(
                ConnectTimeout(
                    f"connecting and the HTTP/2 handshake took over {connect_timeout:.3g}s",
                    endpoint=self.endpoint,
                )
            )
        except (OSError, ssl.SSLError) as exc:
            err = ConnectError(f"cannot connect: {exc}", endpoint=self.endpoint)
            err.__cause__ = exc
            conn.abort(err)
        except asyncio.CancelledError:
            conn.abort(ConnectError("connect cancelled", endpoint=self.endpoint))
            raise
        except BaseException:
            # A failed handshake has already set conn.ready's exception.
            if not conn.closed:
                conn.abort(ConnectError("HTTP/2 handshake failed", endpoint=self.endpoint))

    async def aclose(self) -> None:
        for conn in list(self.connections):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.connections.clear()
