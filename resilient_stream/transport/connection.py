"""One HTTP/2 client connection: an ``asyncio.Protocol`` driving ``h2``.

Hot path: ``data_received`` frames the bytes; plain DATA frames are appended to
their stream's buffer directly (waking its waiter), everything else goes through
``h2.receive_data``. The connection window is
credited on receipt (other streams keep flowing); a stream's window only as its
consumer reads (:meth:`stream_data_consumed`). One write per received batch.

Liveness (keepalive.py): a PING goes out when the server has been quiet for
``ping_interval``; no ACK within ``ping_timeout`` means the connection is dead even
if TCP says otherwise, and every stream on it fails with :class:`ConnectionLostError`.

GOAWAY: streams above ``last_stream_id`` were never processed and fail with
``GoAwayError(processed=False)`` (the transport retries them at once elsewhere).
A graceful GOAWAY (NO_ERROR) lets the streams at or below it drain: ``h2`` closes
its state machine on GOAWAY (python-hyper/h2#1181), so ``h2setup.DrainingH2Connection``
keeps it open for frames of existing streams; the pool never puts a new stream
on such a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx

from ..errors import (
    ConnectionLostError,
    GoAwayError,
    RefusedStreamError,
    StallError,
    StreamResetError,
)
from .h2setup import (
    CONNECTION_CLOSED,
    CONNECTION_DEAD,
    CONNECTION_GOAWAY,
    ConnectionSettings,
    NotHttp2Error,
    error_name,
    new_h2_connection,
    request_headers,
)
from .keepalive import PingKeepalive
from .stream import H2Stream
from .windows import DEFAULT_CONNECTION_WINDOW, ReceiveWindow

if TYPE_CHECKING:
    from .pool import OriginPool

_DataReceived = h2.events.DataReceived
_REFUSED = int(h2.errors.ErrorCodes.REFUSED_STREAM)
_CANCEL = int(h2.errors.ErrorCodes.CANCEL)
#: SETTINGS_MAX_FRAME_SIZE we advertise (the h2 default): larger frames are errors.
_MAX_FRAME = 16_384


class H2ClientConnection(asyncio.Protocol):
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

        self._h2 = new_h2_connection(settings)
        self._conn_window = ReceiveWindow(
            max(settings.connection_window, DEFAULT_CONNECTION_WINDOW)
        )
        # h2's own inbound accounting, kept exact by the DATA fast path. The fast path
        # uses private h2 attributes (present in h2 4.x); without them, h2 does it all.
        self._h2_conn_window: Any = getattr(self._h2, "_inbound_flow_control_window_manager", None)
        self._fast_path = self._h2_conn_window is not None

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

    def data_received(self, data: bytes) -> None:
        """Frame the bytes ourselves; DATA of open streams takes the fast path.

        h2 spends ~20 us per DATA frame (frame objects, flags, an eager ``repr``
        for its trace log, two state machines). A plain DATA frame of a stream
        whose headers we already have needs none of that: we slice the payload,
        update h2's own window accounting (so h2 stays consistent for every
        other frame it sees) and wake the consumer. Every other frame (SETTINGS,
        HEADERS, END_STREAM, RST_STREAM, PING, GOAWAY, padded DATA, ...) goes to
        h2, in order, as whole frames.
        """
        self._keepalive.last_recv = self.loop.time()
        if self._rbuf:
            data = self._rbuf + data
            self._rbuf = b""
        elif not self.ready.done() and data[:5] == b"HTTP/":
            # h2 would wait for a 4.7 MB "frame"; an HTTP/1 server answered our preface.
            self._abort(NotHttp2Error(f"{self.endpoint} answered the HTTP/2 preface in HTTP/1"))
            return
        streams = self.streams
        conn_window = self._h2_conn_window
        n = len(data)
        pos = 0
        slow_from = -1
        credit = 0
        in_block = self._in_header_block
        while n - pos >= 9:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > _MAX_FRAME:  # reject from the header; h2 would buffer it all first
                if slow_from >= 0:
                    self._slow(data[slow_from:pos])
                self._frame_too_large(length)
                return
            end = pos + 9 + length
            if end > n:
                break
            ftype = data[pos + 3]
            if ftype == 0 and not data[pos + 4] & 0x09 and not in_block:
                if slow_from >= 0:
                    credit += self._slow(data[slow_from:pos])
                    slow_from = -1
                    if self.closed:
                        return
                s = streams.get(int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF)
                if s is not None and s.status and s.h2_window is not None:
                    try:
                        conn_window.window_consumed(length)
                        s.h2_window.window_consumed(length)
                    except h2.exceptions.ProtocolError as exc:
                        self._protocol_error(exc)
                        return
                    s.h2_stream._actual_content_length += length
                    s.chunks.append(data[pos + 9 : end])
                    s.unacked += length
                    credit += length
                    waiter = s.waiter
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                    pos = end
                    continue
            elif ftype == 1 or ftype == 5 or ftype == 9:  # header block: no DATA until it ends
                in_block = not data[pos + 4] & 0x04
            if slow_from < 0:
                slow_from = pos
            pos = end
        self._in_header_block = in_block
        if slow_from >= 0:
            credit += self._slow(data[slow_from:pos])
            if self.closed:
                return
        if pos < n:
            self._rbuf = data[pos:]
        if credit:
            increment = self._conn_window.consumed(credit)
            if increment:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._h2.increment_flow_control_window(increment)
        self._flush()

    def _slow(self, frames: bytes) -> int:
        """Whole frames through h2; returns the DATA bytes it consumed (connection credit)."""
        try:
            events = self._h2.receive_data(frames)
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(exc)
            return 0
        streams = self.streams
        credit = 0
        for event in events:
            if type(event) is _DataReceived:
                n = event.flow_controlled_length
                credit += n
                s = streams.get(event.stream_id)
                if s is not None:
                    s.chunks.append(event.data)
                    s.unacked += n
                    s.wake()
            else:
                self._handle_event(event)
        return credit

    def _frame_too_large(self, length: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
        self._protocol_error(
            h2.exceptions.FrameTooLargeError(
                f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE={_MAX_FRAME}"
            )
        )

    def _protocol_error(self, exc: Exception) -> None:
        self._flush()  # h2 queued a GOAWAY naming the error
        self._abort(
            ConnectionLostError(f"HTTP/2 protocol error from server: {exc}", endpoint=self.endpoint)
        )

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

    # --- events ---------------------------------------------------------------

    def _handle_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            s = self.streams.get(event.stream_id)
            if s is not None:
                headers = event.headers
                for name, value in headers:
                    if name == b":status":
                        s.status = int(value)
                        break
                s.headers = [(n, v) for n, v in headers if not n.startswith(b":")]
                s.wake()
        elif isinstance(event, h2.events.StreamEnded):
            s = self.streams.get(event.stream_id)
            if s is not None:
                s.ended = True
                if not s.request_done:  # answered before our body was sent: stop sending
                    self._reset(s.stream_id, _CANCEL)
                self._forget(s)
                s.wake()
        elif isinstance(event, h2.events.StreamReset):
            s = self.streams.get(event.stream_id)
            if s is not None:
                code = int(event.error_code or 0)
                cls = RefusedStreamError if code == _REFUSED else StreamResetError
                s.fail(
                    cls(
                        f"server reset HTTP/2 stream {event.stream_id} ({error_name(code)})",
                        error_code=code,
                        endpoint=self.endpoint,
                    )
                )
                self._forget(s)
        elif isinstance(event, h2.events.WindowUpdated):
            self._wake_senders()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            remote = self._h2.remote_settings.max_concurrent_streams
            self.capacity = max(0, min(self._settings.max_streams, remote))
            self._wake_senders()
            if not self.ready.done():
                self.ready.set_result(None)
            self._pool.capacity_changed(self)
        elif isinstance(event, h2.events.PingAckReceived):
            self._keepalive.acked()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(int(event.error_code or 0), int(event.last_stream_id or 0))
        # Trailers, informational responses, settings ACKs, priority: nothing to do.

    def _on_goaway(self, error_code: int, last_stream_id: int) -> None:
        self.goaway = True
        self._goaway_last_id = last_stream_id
        self._goaway_code = error_code
        self._pool.connection_unusable(self)
        self._pool.log.info(
            CONNECTION_GOAWAY,
            endpoint=self.endpoint,
            error=error_name(error_code),
            last_stream_id=last_stream_id,
            unprocessed=sum(1 for sid in self.streams if sid > last_stream_id),
            draining=sum(1 for sid in self.streams if sid <= last_stream_id),
        )
        name = error_name(error_code)
        for s in list(self.streams.values()):
            if s.stream_id > last_stream_id:
                s.fail(
                    GoAwayError(
                        f"GOAWAY({name}, last_stream_id={last_stream_id}): stream "
                        f"{s.stream_id} was not processed",
                        last_stream_id=last_stream_id,
                        error_code=error_code,
                        processed=False,
                        endpoint=self.endpoint,
                    )
                )
                self._forget(s)
        if error_code != 0:
            self._shutdown(self._lost_error("GOAWAY"))
            self._close_transport()
        elif not self.streams:
            self.close()

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
        if self.closed or self.goaway:
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
        self.streams_opened += 1
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

    def stream_data_consumed(self, s: H2Stream, n: int) -> None:
        """The consumer read ``n`` flow-controlled bytes: maybe reopen its window."""
        if s.stream_id not in self.streams:
            return  # stream over: nothing more will come on it
        increment = s.window.consumed(n)
        if increment:
            try:
                self._h2.increment_flow_control_window(increment, stream_id=s.stream_id)
            except h2.exceptions.ProtocolError:
                return
            self._flush()

    def set_stream_window(self, s: H2Stream, size: int) -> None:
        """Resize one stream's receive window (adaptive buffering hook).

        Growing sends the difference at once; shrinking withholds later credit
        (HTTP/2 cannot take credit back).
        """
        increment = s.window.resize(size)
        if increment and s.stream_id in self.streams:
            try:
                self._h2.increment_flow_control_window(increment, stream_id=s.stream_id)
            except h2.exceptions.ProtocolError:
                return
            self._flush()

    def set_connection_window(self, size: int) -> None:
        """Resize the connection's receive window (adaptive buffering hook)."""
        increment = self._conn_window.resize(size)
        if increment and not self.closed:
            self._h2.increment_flow_control_window(increment)
            self._flush()

    @property
    def rtt(self) -> float | None:
        """Round-trip time of the last ACKed keepalive PING, if any."""
        return self._keepalive.rtt

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
