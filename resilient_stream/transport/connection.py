"""One HTTP/2 client connection: an ``asyncio.Protocol`` driving ``h2``.

Its jobs are split by seam: receiving (framing, the DATA fast path, h2 events)
is :class:`~.receive.FrameReceiver`; receive windows and adaptive sizing are
:class:`~.flow.FlowControl`; this module holds the lifecycle: handshake, opening
streams and sending request bodies, liveness, resets and closing.

Liveness (keepalive.py): a PING goes out when the server has been quiet for
``ping_interval``; no ACK within ``ping_timeout`` means the connection is dead even
if TCP says otherwise, and every stream on it fails with :class:`ConnectionLostError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.exceptions
import httpx

from ..buffering.bdp import BdpEstimator
from ..errors import ConnectionLostError, GoAwayError, StallError
from .flood import ControlFrameBudget
from .flow import FlowControl
from .h2setup import (
    CONNECTION_CLOSED,
    CONNECTION_DEAD,
    ConnectionSettings,
    NotHttp2Error,
    error_name,
    new_h2_connection,
    request_headers,
)
from .keepalive import PingKeepalive
from .receive import FrameReceiver
from .stream import H2Stream
from .windows import DEFAULT_CONNECTION_WINDOW, ReceiveWindow

if TYPE_CHECKING:
    from .pool import OriginPool

_CANCEL = int(h2.errors.ErrorCodes.CANCEL)


class H2ClientConnection(FrameReceiver, FlowControl, asyncio.Protocol):
    """An HTTP/2 connection carrying many concurrent streams."""

    def __init__(
        self,
        pool: OriginPool,
        settings: ConnectionSettings,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
    ) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self._pool = pool
        self._settings = settings
        self.streams: dict[int, H2Stream] = {}
        self.reserved = 0  # pool slots held (streams open or about to open)
        self.capacity = settings.max_streams  # min(client cap, server MAX_CONCURRENT_STREAMS)
        self.streams_opened = 0
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_retrieve)
        self.goaway = False  # received GOAWAY: no new streams
        self.closed = False
        self.close_reason: BaseException | None = None
        self.idle_handle: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._send_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._keepalive = PingKeepalive(
            loop, settings.ping_interval, settings.ping_timeout, self._send_ping, self._ping_expired
        )
        self._goaway_last_id = 0
        self._goaway_code = 0
        self._rbuf = b""  # an incomplete frame, waiting for its remaining bytes
        self._in_header_block = False
        self._preface_ok = False  # the server's first frame header was a SETTINGS frame
        self._flood = ControlFrameBudget(now=loop.time())  # frames the server sends unasked

        self._h2 = new_h2_connection(settings)
        self._conn_window = ReceiveWindow(
            max(settings.connection_window, DEFAULT_CONNECTION_WINDOW)
        )
        # h2's own inbound accounting, kept exact by the DATA fast path. The fast path
        # uses private h2 attributes (present in h2 4.x); without them, h2 does it all.
        self._h2_conn_window: Any = getattr(self._h2, "_inbound_flow_control_window_manager", None)
        self._fast_path = self._h2_conn_window is not None
        self._sizing = settings.sizing
        self._budget = settings.budget
        self._bdp: BdpEstimator | None = (
            BdpEstimator(limit=settings.sizing.cap)
            if settings.sizing is not None and settings.bdp_probe
            else None
        )

    # --- state seen by the pool ------------------------------------------------

    @property
    def usable(self) -> bool:
        """Can take new streams (open, handshake not failed, no GOAWAY)."""
        return not (self.closed or self.goaway) and not (
            self.ready.done() and self.ready.exception() is not None
        )

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        h2c = self._h2
        h2c.initiate_connection()
        extra = self._conn_window.size - DEFAULT_CONNECTION_WINDOW
        if extra > 0:
            h2c.increment_flow_control_window(extra)
        transport.write(h2c.data_to_send())
        self._keepalive.start()

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        cause = f": {exc!r}" if exc is not None else ""
        self._shutdown(self._lost_error(f"connection closed by peer{cause}"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_senders()

    # --- liveness ---------------------------------------------------------------

    def _send_ping(self) -> bool:
        if self.closed:
            return False
        try:
            self._h2.ping(b"rs-alive")
        except h2.exceptions.ProtocolError:
            return False
        self._flush()
        return True

    def _ping_expired(self) -> None:
        if self.closed:
            return
        self._pool.log.warning(
            CONNECTION_DEAD,
            endpoint=self.endpoint,
            ping_timeout=self._settings.ping_timeout,
            streams=len(self.streams),
        )
        self._shutdown(
            ConnectionLostError(
                f"no PING ACK within {self._settings.ping_timeout:.3g}s: connection is dead",
                endpoint=self.endpoint,
            )
        )
        self._close_transport(abort=True)

    # --- streams ------------------------------------------------------------------

    def open_stream(
        self, request: httpx.Request, has_body: bool, timeout: float | None
    ) -> H2Stream:
        """Send the request headers. From here on the stream owns the pool slot."""
        if self.goaway:
            raise self.unsent_error()
        if self.closed:
            raise self.close_reason or self._lost_error("connection is closing")
        h2c = self._h2
        headers = request_headers(request)
        stream_id = h2c.get_next_available_stream_id()
        h2c.send_headers(stream_id, headers, end_stream=not has_body)  # may raise TooManyStreams
        s = H2Stream(self, stream_id, self._settings.stream_window, timeout)
        h2_stream = h2c.streams[stream_id]
        if self._fast_path and hasattr(h2_stream, "_actual_content_length"):
            s.h2_stream = h2_stream
            s.h2_window = getattr(h2_stream, "_inbound_window_manager", None)
        s.request_done = not has_body
        self.streams[stream_id] = s
        self._flood.stream_opened()
        self.streams_opened += 1
        self.start_window(s)
        self._flush()
        return s

    async def send_body(self, s: H2Stream, body: bytes) -> None:
        """Send the request body within the peer's flow-control windows, then END_STREAM.

        A peer that grants no window for the stream's idle timeout fails it with
        :class:`StallError`, like a peer that sends nothing.
        """
        h2c = self._h2
        sid = s.stream_id
        pos = 0
        total = len(body)
        while pos < total:
            if s.error is not None or s.ended or self.closed:
                return
            n = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size, total - pos)
            if n <= 0 or self._write_paused:
                await self._wait_senders(s.timeout)
                continue
            h2c.send_data(sid, body[pos : pos + n])
            pos += n
            self._flush()
        if s.error is None and not s.ended and not self.closed:
            h2c.end_stream(sid)
            s.request_done = True
            self._flush()

    async def _wait_senders(self, idle_timeout: float | None) -> None:
        waiter = self.loop.create_future()
        self._send_waiters.append(waiter)
        try:
            async with asyncio.timeout(idle_timeout):
                await waiter
        except TimeoutError:
            raise StallError(
                f"server granted no flow-control window for {idle_timeout}s while we sent "
                "the request body",
                waited=idle_timeout or 0.0,
                endpoint=self.endpoint,
            ) from None

    def _wake_senders(self) -> None:
        waiters, self._send_waiters = self._send_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close_stream(self, s: H2Stream) -> None:
        """Consumer is done with the stream: RST_STREAM(CANCEL) if it is still open."""
        s.cancel_timer()
        if s.stream_id in self.streams:
            self._reset(s.stream_id, _CANCEL)
            self._flush()
            self._forget(s)
        s.chunks.clear()

    def _reset(self, stream_id: int, code: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed in h2
            self._h2.reset_stream(stream_id, error_code=code)

    def _forget(self, s: H2Stream) -> None:
        """The stream no longer occupies a slot on this connection."""
        if self.streams.pop(s.stream_id, None) is not None:
            self._pool.release(self)
            if self.goaway and not self.streams and not self.closed:
                self.close()

    # --- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Graceful close (idle expiry, transport shutdown): GOAWAY then FIN."""
        if self._transport is not None and not self.closed:
            try:
                self._h2.close_connection()
                self._flush()
            except h2.exceptions.ProtocolError:
                pass
        self._shutdown(self._lost_error("connection closed by the client"))
        self._close_transport()

    def _abort(self, exc: BaseException) -> None:
        self._shutdown(exc)
        self._close_transport(abort=True)

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

    def _lost_error(self, what: str) -> BaseException:
        if self.goaway:
            return GoAwayError(
                f"{what} after GOAWAY({error_name(self._goaway_code)}, "
                f"last_stream_id={self._goaway_last_id}) before the stream finished",
                last_stream_id=self._goaway_last_id,
                error_code=self._goaway_code,
                processed=True,
                endpoint=self.endpoint,
            )
        return ConnectionLostError(what, endpoint=self.endpoint)

    def unsent_error(self) -> GoAwayError:
        """The error of a stream that never went out because of this connection's GOAWAY."""
        return GoAwayError(
            f"GOAWAY({error_name(self._goaway_code)}, last_stream_id={self._goaway_last_id}) "
            "arrived before the stream was sent: it was not processed",
            last_stream_id=self._goaway_last_id,
            error_code=self._goaway_code,
            processed=False,
            endpoint=self.endpoint,
        )

    def _shutdown(self, exc: BaseException) -> None:
        """Fail every stream and stop all timers. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = exc
        if not self.ready.done():
            self.ready.set_exception(exc)
        self._keepalive.stop()
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        streams, self.streams = self.streams, {}
        if self.ready.done() and not isinstance(exc, NotHttp2Error):  # it was open
            log = self._pool.log.info if streams else self._pool.log.debug
            log(
                CONNECTION_CLOSED,
                endpoint=self.endpoint,
                reason=str(exc),
                streams_failed=len(streams),
            )
        for s in streams.values():
            s.fail(exc)
            self._pool.release(self)
        self._wake_senders()
        self._pool.connection_closed(self)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


def _retrieve(fut: asyncio.Future[None]) -> None:
    """Mark a failed handshake as seen, so nobody-awaited failures do not warn."""
    if not fut.cancelled():
        fut.exception()
