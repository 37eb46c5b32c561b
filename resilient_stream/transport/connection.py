"""One HTTP/2 client connection on asyncio: the thin edge around :class:`~.core.H2Core`.

The core decides; this ``asyncio.BufferedProtocol`` does the I/O: it feeds the
core what the socket read (into the thread's reused buffer: reads.py), writes what
the core has to send, wakes the readers of the streams with news, runs the
keepalive timer, waits for send window while a request body goes out, and tells
its pool (``pool.py``, through :class:`ConnectionOwner`) when slots free up and the
connection changes.

Liveness (keepalive.py): a PING goes out when the server has been quiet for
``ping_interval``; no ACK within ``ping_timeout`` means the connection is dead even
if TCP says otherwise, and every stream on it fails with :class:`ConnectionLostError`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..errors import ConnectionLostError, GoAwayError, StallError
from ..h2wire import error_name
from .core import H2Core
from .deadlines import DeadlineWheel
from .events import (
    ConnectionEnded,
    Event,
    Flooded,
    GoAwayReceived,
    PingAcked,
    SettingsReceived,
    StreamClosed,
    WindowOpened,
)
from .h2setup import (
    CONNECTION_CLOSED,
    CONNECTION_DEAD,
    CONNECTION_FLOOD,
    CONNECTION_GOAWAY,
    ConnectionSettings,
    NotHttp2Error,
)
from .reads import read_buffer
from .stream import H2Stream


class ConnectionOwner(Protocol):
    """What a connection tells the pool that holds it (``pool.OriginPool``)."""

    log: Any

    def release(self, conn: H2ClientConnection) -> None:
        """A stream slot on ``conn`` is free again."""

    def capacity_changed(self, conn: H2ClientConnection) -> None:
        """The server's stream limit for ``conn`` is known or changed."""

    def connection_unusable(self, conn: H2ClientConnection) -> None:
        """GOAWAY: no new streams on ``conn``."""

    def connection_closed(self, conn: H2ClientConnection) -> None:
        """``conn`` is closed; forget it."""


class H2ClientConnection(asyncio.BufferedProtocol):
    """An HTTP/2 connection carrying many concurrent streams."""

    def __init__(
        self,
        owner: ConnectionOwner,
        settings: ConnectionSettings,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
    ) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self._owner = owner
        self._core = H2Core(settings, endpoint, loop.time())
        self.reserved = 0  # pool slots held (streams open or about to open)
        self.ready: asyncio.Future[None] = loop.create_future()  # the handshake
        self.ready.add_done_callback(_retrieve)
        self.idle_handle: asyncio.TimerHandle | None = None  # the pool's idle expiry
        self._transport: asyncio.Transport | None = None
        self._send_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._keepalive: asyncio.TimerHandle | None = None
        #: The stall deadlines of this connection's readers, on one loop timer.
        self.deadlines = DeadlineWheel(loop, settings.deadline_resolution)
        self._reads = read_buffer()  # this thread's: the loop's reads land there

    # --- state seen by the pool and the transport ----------------------------------

    @property
    def usable(self) -> bool:
        """Can take new streams (open, handshake not failed, no GOAWAY)."""
        core = self._core
        return not (core.closed or core.goaway) and not (
            self.ready.done() and self.ready.exception() is not None
        )

    @property
    def streams(self) -> dict[int, H2Stream]:
        return self._core.streams

    @property
    def capacity(self) -> int:
        return self._core.capacity

    @property
    def streams_opened(self) -> int:
        return self._core.streams_opened

    @property
    def goaway(self) -> bool:
        return self._core.goaway

    @property
    def closed(self) -> bool:
        return self._core.closed

    @property
    def close_reason(self) -> BaseException | None:
        return self._core.close_reason

    @property
    def rtt(self) -> float | None:
        return self._core.rtt

    @property
    def bdp(self) -> int:
        return self._core.bdp

    @property
    def connection_window(self) -> int:
        """The connection's receive window size now."""
        return self._core.flow.connection.size

    def unsent_error(self) -> GoAwayError:
        return self._core.unsent_error()

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        core = self._core
        core.initiate()
        transport.write(core.data_to_send())
        core.keepalive.last_recv = self.loop.time()
        self._arm_keepalive()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reads

    def buffer_updated(self, nbytes: int) -> None:
        # copied out before the next read (of any connection of this thread) reuses it
        self.data_received(self._reads[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        core = self._core
        for item in core.receive_data(data, self.loop.time()):
            if type(item) is H2Stream:  # news for a stream: wake its reader
                waiter = item.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            else:
                assert isinstance(item, Event)
                self._on_event(item)
        if core.pending:  # a read of plain DATA queues nothing: skip the call
            self._flush()
        if core.goaway and not core.streams and not core.closed:
            self.close()  # a graceful GOAWAY, and the last stream is done

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        cause = f": {exc!r}" if exc is not None else ""
        self._shutdown(self._core.lost_error(f"connection closed by peer{cause}"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_senders()

    def _on_event(self, event: Event) -> None:
        owner = self._owner
        if isinstance(event, StreamClosed):
            _wake(event.stream)
            owner.release(self)
        elif isinstance(event, WindowOpened):
            self._wake_senders()
        elif isinstance(event, SettingsReceived):
            self._wake_senders()  # the initial window may have changed
            if not self.ready.done():
                self.ready.set_result(None)
            owner.capacity_changed(self)
        elif isinstance(event, PingAcked):
            self._arm_keepalive()
        elif isinstance(event, GoAwayReceived):
            owner.connection_unusable(self)
            owner.log.info(
                CONNECTION_GOAWAY,
                endpoint=self.endpoint,
                error=error_name(event.error_code),
                last_stream_id=event.last_stream_id,
                unprocessed=event.unprocessed,
                draining=event.draining,
            )
        elif isinstance(event, Flooded):
            owner.log.warning(
                CONNECTION_FLOOD,
                endpoint=self.endpoint,
                frame=event.frame,
                unsolicited=event.unsolicited,
                streams=event.streams,
            )
        elif isinstance(event, ConnectionEnded):
            self._flush()  # the GOAWAY naming why, if the core queued one
            self._closed(event.error, event.failed)
            if event.abort:
                self._close_transport(abort=True)
            else:
                self._close_after_flush()

    # --- liveness ---------------------------------------------------------------------

    def _arm_keepalive(self) -> None:
        """(Re)start the one keepalive timer at the time the core's keepalive names."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        keepalive = self._core.keepalive
        if keepalive.enabled and not self._core.closed:
            now = self.loop.time()
            self._keepalive = self.loop.call_at(keepalive.next_check(now), self._on_keepalive)

    def _on_keepalive(self) -> None:
        self._keepalive = None
        core = self._core
        if core.closed:
            return
        now = self.loop.time()
        keepalive = core.keepalive
        if keepalive.expired(now):
            self._ping_expired()
            return
        if keepalive.due(now):
            if not core.send_keepalive_ping(now):
                return  # h2 cannot send (closing): no more keepalive
            self._flush()
        self._keepalive = self.loop.call_at(keepalive.next_check(now), self._on_keepalive)

    def _ping_expired(self) -> None:
        timeout = self._core.keepalive.timeout
        self._owner.log.warning(
            CONNECTION_DEAD,
            endpoint=self.endpoint,
            ping_timeout=timeout,
            streams=len(self._core.streams),
        )
        self.abort(
            ConnectionLostError(
                f"no PING ACK within {timeout:.3g}s: connection is dead",
                endpoint=self.endpoint,
            )
        )

    # --- streams ------------------------------------------------------------------------

    def open_stream(self, headers: list[tuple[bytes, bytes]], has_body: bool) -> H2Stream:
        """Send the request headers. From here on the stream owns the pool slot."""
        core = self._core
        if core.goaway:
            raise core.unsent_error()
        if core.closed:
            raise core.close_reason or core.lost_error("connection is closing")
        s = core.open_stream(headers, end_stream=not has_body)  # may raise TooManyStreams
        self._flush()
        return s

    async def send_body(self, s: H2Stream, body: bytes, write_timeout: float | None) -> None:
        """Send the request body within the peer's flow-control windows, then END_STREAM.

        A peer that grants no window for ``write_timeout`` seconds (httpx's ``write``
        timeout; None: no bound) fails it with :class:`StallError`.
        """
        core = self._core
        pos = 0
        total = len(body)
        while pos < total:
            if s.error is not None or s.ended or core.closed:
                return
            n = min(core.sendable(s), total - pos)
            if n <= 0 or self._write_paused:
                await self._wait_senders(write_timeout)
                continue
            core.send_data(s, body[pos : pos + n])
            pos += n
            self._flush()
        if s.error is None and not s.ended and not core.closed:
            core.end_request(s)
            self._flush()

    async def _wait_senders(self, write_timeout: float | None) -> None:
        waiter = self.loop.create_future()
        self._send_waiters.append(waiter)
        try:
            async with asyncio.timeout(write_timeout):
                await waiter
        except TimeoutError:
            raise StallError(
                f"server granted no flow-control window for {write_timeout}s while we sent "
                "the request body",
                waited=write_timeout or 0.0,
                endpoint=self.endpoint,
            ) from None

    def _wake_senders(self) -> None:
        waiters, self._send_waiters = self._send_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def stream_data_consumed(self, s: H2Stream, n: int) -> None:
        """The consumer took ``n`` flow-controlled bytes (all that waited)."""
        core = self._core
        core.stream_data_consumed(s, n, self.loop.time())
        if core.pending:  # most reads grant no credit yet
            self._flush()

    def close_stream(self, s: H2Stream) -> None:
        """The consumer is done with the stream: RST_STREAM(CANCEL) if it is still open."""
        core = self._core
        if core.reset_stream(s):
            self._flush()
            self._owner.release(self)
            if core.goaway and not core.streams and not core.closed:
                self.close()

    # --- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Graceful close (idle expiry, transport shutdown, drained): GOAWAY then FIN."""
        if self._transport is not None and not self._core.closed:
            self._core.close()
            self._flush()
        self._shutdown(self._core.lost_error("connection closed by the client"))
        self._close_transport()

    def abort(self, exc: BaseException) -> None:
        """Fail everything with ``exc`` and drop the socket (connect errors, dead peer)."""
        self._shutdown(exc)
        self._close_transport(abort=True)

    def _shutdown(self, exc: BaseException) -> None:
        """Fail every stream and stop all timers. Idempotent."""
        failed = self._core.terminate(exc)
        if failed is not None:
            self._closed(exc, failed)

    def _closed(self, exc: BaseException, failed: list[H2Stream]) -> None:
        """The core is closed (``exc``): settle what the edge holds."""
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        owner = self._owner
        if not isinstance(exc, NotHttp2Error):
            log = owner.log.info if failed else owner.log.debug
            log(
                CONNECTION_CLOSED,
                endpoint=self.endpoint,
                reason=str(exc),
                streams_failed=len(failed),
            )
        for s in failed:
            _wake(s)
            owner.release(self)
        self._wake_senders()
        owner.connection_closed(self)

    def _close_transport(self, abort: bool = False) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()

    def _close_after_flush(self, grace: float = 1.0) -> None:
        """Close once what we wrote went out (a GOAWAY naming why); abort after ``grace``
        seconds if the peer does not read it."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            self.loop.call_later(grace, transport.abort)

    def _flush(self) -> None:
        data = self._core.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def _wake(s: H2Stream) -> None:
    waiter = s.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _retrieve(fut: asyncio.Future[None]) -> None:
    """Mark a failed handshake as seen, so nobody-awaited failures do not warn."""
    if not fut.cancelled():
        fut.exception()
