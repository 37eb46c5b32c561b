"""``MultiplexedTransport``: an ``httpx.AsyncBaseTransport`` over asyncio + ``h2``.

Use it with any httpx client::

    async with httpx.AsyncClient(transport=MultiplexedTransport()) as client:
        async with client.stream("POST", url, json=body) as response:
            async for data in response.aiter_raw():
                ...

Timeouts come from the request like with stock httpx, with HTTP/2-correct meaning
(timeouts.py): ``read`` is the *per-stream* wait for this stream's headers and
first DATA frame, then the gap allowed between two of its DATA frames, independent
of other streams' traffic, raising :class:`~resilient_stream.errors.StallError`;
``read=None`` is no read timeout, as in httpx. ``write`` bounds the wait for send
window while the request body goes out; ``connect`` bounds TCP + TLS + the HTTP/2
handshake; ``pool`` the wait for a stream slot (``None``: the config's
``connect_timeout`` and ``pool_timeout``). The request extension
``"stream_timeouts"`` asks for the config's two-phase bound instead of ``read``
(``first_token_timeout`` until the first DATA frame, then ``idle_timeout``), and may
bound the wait for the response headers on its own (``"headers"``: a deadline on the
connection's timing wheel, so a caller need not arm an asyncio timer per request).

Streams refused by the server (REFUSED_STREAM) or above a GOAWAY's
``last_stream_id`` were never processed, so the first such failure of a request is
retried at once on another or a new connection, invisibly to the caller (gRPC's
transparent retry). When it repeats, the request is resent at most
:data:`MAX_TRANSPARENT_RETRIES` times in all, after a jittered backoff, and then the
typed error is raised: a server that refuses everything, or drains every new
connection, cannot make one request spin.

HTTP/1.1: ``http2=False`` (config) sends ``http://`` origins through httpx's own
HTTP/1.1 transport; an origin that answers the h2c preface in HTTP/1 is
remembered and falls back automatically, and ``https://`` origins negotiate with
ALPN.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator
from typing import Any

import h2.exceptions
import httpx
import msgspec

from .. import errors
from ..buffering.consumer import ConsumerBudget
from ..buffering.sizing import WindowSizing
from ..config import StreamConfig
from ..logging import library_logger
from ..retry import (
    FREE_TRANSPARENT_RETRIES,
    backoff_delay,
    never_processed,
    note_transparent_retries,
)
from .h2setup import STREAM_TRANSPARENT_RETRY, ConnectionSettings
from .headers import request_headers
from .pool import OriginPool, UseHttp1
from .response import BODY_EXTENSION, H2ResponseStream, ReadDeadline
from .timeouts import HeadersDeadline, headers_timeout_error, request_timeouts

#: Resends of one request that the server never processed (RST_STREAM(REFUSED_STREAM), a
#: stream above a GOAWAY's last_stream_id): the first at once and for free (gRPC's
#: transparent retry), the others after a jittered backoff (``backoff_initial``,
#: ``backoff_max``); then the error is raised and the caller's retry policy decides.
MAX_TRANSPARENT_RETRIES = 3
#: Connection picks per request, all causes (refusals, a lowered stream limit, h2 errors).
_MAX_PICKS = 12
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TransportStats(msgspec.Struct, frozen=True):
    """A snapshot of the transport, for tests, metrics and benchmarks."""

    connections: int
    """Open HTTP/2 connections, all origins."""
    connections_opened: int
    """HTTP/2 connections opened since the transport was created."""
    streams_active: int
    """Streams holding a slot (open, or opening) right now."""
    streams_opened: int
    """HTTP/2 streams started on connections still open."""
    buffered_bytes: int
    """Response bytes received on open streams but not yet read by their consumers."""
    http1_origins: list[str]
    """Origins that fell back to HTTP/1.1."""
    stream_window_max: int = 0
    """Largest receive window of an open stream now (adaptive windows)."""
    connection_window_max: int = 0
    """Largest connection receive window now."""
    bdp_max: int = 0
    """Largest bandwidth-delay product estimate of an open connection (0: not measured)."""
    rtt: float = 0.0
    """Round-trip time of the connection with the largest BDP estimate (0.0: unknown)."""


class MultiplexedTransport(httpx.AsyncBaseTransport):
    """HTTP/2 multiplexing with per-stream flow control, liveness and typed errors."""

    #: Honours the ``"headers"`` bound of the ``stream_timeouts`` extension (timeouts.py):
    #: callers that see this need no timer of their own around the request.
    bounds_headers = True

    def __init__(
        self,
        config: StreamConfig | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config if config is not None else StreamConfig()
        if overrides:
            cfg = cfg.replace(**overrides)
        self.config = cfg
        self._settings = ConnectionSettings(
            max_streams=max(1, cfg.max_streams_per_connection),
            stream_window=cfg.initial_stream_window,
            connection_window=cfg.connection_window,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            deadline_resolution=cfg.deadline_resolution,
            sizing=WindowSizing(
                floor=cfg.stream_window_floor,
                cap=cfg.stream_window_cap,
                initial=cfg.initial_stream_window,
                connection_floor=cfg.connection_window,
            )
            if cfg.adaptive_windows
            else None,
            budget=ConsumerBudget(
                target_latency=cfg.consumer_target_latency,
                floor=cfg.stream_window_floor,
                cap=cfg.stream_window_cap,
            )
            if cfg.adaptive_windows
            else None,
            bdp_probe=cfg.bdp_probe,
        )
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2", "http/1.1"])  # needed to negotiate h2
        self._ssl_context = ssl_context
        self._log = library_logger(cfg.log_level)
        self._pools: dict[tuple[str, str, int], OriginPool] = {}
        self._http1: httpx.AsyncHTTPTransport | None = None
        self._rng = random.Random()
        self._closed = False

    # --- httpx interface -----------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise errors.ConnectError("transport is closed", endpoint=str(request.url))
        url = request.url
        scheme = url.scheme
        if scheme == "http" and not self.config.http2:
            return await self._send_http1(request)
        if scheme not in _DEFAULT_PORTS:
            raise errors.ConnectError(f"unsupported URL scheme {scheme!r}", endpoint=str(url))
        pool = self._pool_for(scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        if pool.http1:
            return await self._send_http1(request)
        try:
            return await self._send_http2(pool, request)
        except UseHttp1:
            return await self._send_http1(request)

    async def aclose(self) -> None:
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
        if self._http1 is not None:
            await self._http1.aclose()

    # --- HTTP/2 ---------------------------------------------------------------------------

    async def _send_http2(self, pool: OriginPool, request: httpx.Request) -> httpx.Response:
        bounds = request_timeouts(request.extensions, self.config)
        by: HeadersDeadline | None = None
        if bounds.headers is not None:
            now = asyncio.get_running_loop().time()
            by = HeadersDeadline(now + bounds.headers, bounds.headers)
        headers = request_headers(request)  # checked before the request takes a slot
        body = await request.aread()
        last_error: BaseException | None = None
        refused = 0  # failures of this request that the server never processed, in a row
        for _ in range(_MAX_PICKS):
            try:
                conn = await pool.acquire(bounds.pool, bounds.connect, by)
            except errors.GoAwayError as exc:  # drained while we waited for its handshake
                if not never_processed(exc):
                    raise
                refused = await self._before_resend(pool, exc, refused)
                last_error = exc
                continue
            try:
                s = conn.open_stream(headers, bool(body))
            except h2.exceptions.TooManyStreamsError:
                pool.release(conn)  # server lowered its limit under us: pick again
                continue
            except h2.exceptions.ProtocolError as exc:
                pool.release(conn)
                last_error = errors.ConnectionLostError(
                    f"cannot start a stream: {exc}", endpoint=pool.endpoint
                )
                continue
            except BaseException:
                pool.release(conn)
                raise
            # Until the first DATA frame the first bound applies (a server may send its
            # headers before the model has loaded), then the idle bound.
            response = H2ResponseStream(
                conn, s, first=bounds.first, idle=bounds.idle, coalesce=self.config.coalesce_reads
            )
            try:
                if body:
                    await conn.send_body(s, body, bounds.write)
                # the headers bound: a deadline on the connection's timing wheel, as the
                # idle bound (no asyncio timer per request)
                until = by.until if by is not None else 0.0
                while not s.status and s.error is None:
                    await response.wait(until)
            except ReadDeadline:
                response.close()
                assert by is not None
                raise by.error(pool.endpoint, f"HTTP/2 stream {s.stream_id}") from None
            except BaseException:
                response.close()
                raise
            if s.status:
                # the response copies them: not kept twice for the stream's life
                received, s.headers = s.headers, ()
                return httpx.Response(
                    status_code=s.status,
                    headers=received,
                    stream=response,
                    extensions={
                        "http_version": b"HTTP/2",
                        "stream_id": s.stream_id,
                        BODY_EXTENSION: response,
                    },
                )
            error = s.error
            response.close()
            assert error is not None
            if not never_processed(error):
                raise error
            refused = await self._before_resend(pool, error, refused)
            last_error = error
        assert last_error is not None
        raise last_error

    async def _before_resend(self, pool: OriginPool, error: BaseException, refused: int) -> int:
        """``error``: the server never processed the request. Resend it (at once the first
        time, after a backoff when it repeats) or, past :data:`MAX_TRANSPARENT_RETRIES`,
        raise ``error`` saying how often it happened. Returns the new count."""
        refused += 1
        if refused > MAX_TRANSPARENT_RETRIES:
            note_transparent_retries(error, refused - 1)
            if isinstance(error, errors.StreamError):
                error.message += (
                    f" ({refused} times in a row for this request, never processed: "
                    "not resent again by the transport)"
                )
            raise error
        cfg = self.config
        delay = backoff_delay(
            refused - FREE_TRANSPARENT_RETRIES, cfg.backoff_initial, cfg.backoff_max, self._rng
        )
        self._log.debug(
            STREAM_TRANSPARENT_RETRY,
            endpoint=pool.endpoint,
            reason=str(error),
            attempt=refused,
            wait=round(delay, 4),
        )
        if delay > 0:
            await asyncio.sleep(delay)
        return refused

    def _pool_for(self, scheme: str, host: str, port: int) -> OriginPool:
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = OriginPool(
                scheme=scheme,
                host=host,
                port=port,
                settings=self._settings,
                max_connections=self.config.max_connections,
                keepalive_expiry=self.config.keepalive_expiry,
                ssl_context=self._tls_context() if scheme == "https" else None,
                log=self._log,
            )
            self._pools[key] = pool
        return pool

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            ctx = httpx.create_ssl_context(verify=self.config.verify_tls)
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            self._ssl_context = ctx
        return self._ssl_context

    # --- HTTP/1.1 fallback ------------------------------------------------------------------

    async def _send_http1(self, request: httpx.Request) -> httpx.Response:
        if self._http1 is None:
            cfg = self.config
            verify: ssl.SSLContext | bool = (
                self._ssl_context if self._ssl_context is not None else cfg.verify_tls
            )
            self._http1 = httpx.AsyncHTTPTransport(
                verify=verify,
                http1=True,
                http2=False,
                limits=httpx.Limits(
                    max_connections=cfg.max_connections * cfg.max_streams_per_connection,
                    max_keepalive_connections=cfg.max_connections * cfg.max_streams_per_connection,
                    keepalive_expiry=cfg.keepalive_expiry,
                ),
            )
        bounds = request_timeouts(request.extensions, self.config)
        request.extensions["timeout"] = {
            "connect": bounds.connect,
            "read": bounds.read,  # one bound for every read: None stays None, as in httpx
            "write": bounds.write,
            "pool": bounds.pool,
        }
        endpoint = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
        try:
            async with asyncio.timeout(bounds.headers):
                response = await self._http1.handle_async_request(request)
        except httpx.TransportError as exc:
            raise _map_http1_error(exc, endpoint) from exc
        except TimeoutError:
            assert bounds.headers is not None
            raise headers_timeout_error(bounds.headers, endpoint, "HTTP/1.1") from None
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Http1Body(response.stream, endpoint)
        return response

    # --- introspection --------------------------------------------------------------------------

    def stats(self) -> TransportStats:
        conns = [c for p in self._pools.values() for c in p.connections]
        return TransportStats(
            connections=len(conns),
            connections_opened=sum(p.connections_opened for p in self._pools.values()),
            streams_active=sum(c.reserved for c in conns),
            streams_opened=sum(c.streams_opened for c in conns),
            buffered_bytes=sum(len(b) for c in conns for s in c.streams.values() for b in s.chunks),
            http1_origins=[p.endpoint for p in self._pools.values() if p.http1],
            stream_window_max=max(
                (s.window.size for c in conns for s in c.streams.values()), default=0
            ),
            connection_window_max=max((c.connection_window for c in conns), default=0),
            bdp_max=max((c.bdp for c in conns), default=0),
            rtt=max(conns, key=lambda c: c.bdp).rtt or 0.0 if conns else 0.0,
        )


class _Http1Body(httpx.AsyncByteStream):
    """Maps httpx/httpcore body errors of the HTTP/1.1 fallback to our error types."""

    def __init__(self, inner: httpx.AsyncByteStream, endpoint: str) -> None:
        self._inner = inner
        self._endpoint = endpoint

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            raise _map_http1_error(exc, self._endpoint) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def _map_http1_error(exc: httpx.TransportError, endpoint: str) -> errors.TransportError:
    if isinstance(exc, errors.TransportError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return errors.ConnectTimeout(text, endpoint=endpoint)
    if isinstance(exc, httpx.ConnectError):
        return errors.ConnectError(text, endpoint=endpoint)
    if isinstance(exc, httpx.PoolTimeout):
        return errors.PoolTimeout(text, endpoint=endpoint)
    if isinstance(exc, httpx.ReadTimeout):
        return errors.StallError(f"HTTP/1.1 read timed out: {text}", waited=0.0, endpoint=endpoint)
    return errors.ConnectionLostError(f"HTTP/1.1 connection failed: {text}", endpoint=endpoint)
