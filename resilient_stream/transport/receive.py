"""Receiving: framing, the DATA fast path, and h2 events (one job of the connection).

``data_received`` frames the bytes; plain DATA frames are appended to their
stream's buffer directly (waking its waiter), everything else goes through
``h2.receive_data`` in order. The connection window is credited on receipt
(other streams keep flowing); a stream's window only as its consumer reads
(flow.py). One write per received batch.

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
import struct
from typing import TYPE_CHECKING, Any, cast

import h2.errors
import h2.events
import h2.exceptions

from ..errors import (
    ConnectionLostError,
    FloodError,
    GoAwayError,
    RefusedStreamError,
    StreamResetError,
)
from .flood import ControlFrameBudget, frame_name
from .h2setup import (
    CONNECTION_FLOOD,
    CONNECTION_GOAWAY,
    ConnectionSettings,
    NotHttp2Error,
    error_name,
    server_preface_verdict,
)
from .keepalive import PingKeepalive
from .stream import H2Stream
from .windows import ReceiveWindow

if TYPE_CHECKING:
    from ..buffering.bdp import BdpEstimator
    from .connection import H2ClientConnection
    from .h2setup import DrainingH2Connection
    from .pool import OriginPool

_DataReceived = h2.events.DataReceived
_REFUSED = int(h2.errors.ErrorCodes.REFUSED_STREAM)
_CANCEL = int(h2.errors.ErrorCodes.CANCEL)
_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
#: Frame types the server sends unasked that cost us work (PRIORITY, SETTINGS, PING:
#: without ACK; extension types above 0x9 and empty DATA are checked in the loop).
_UNASKED = frozenset({0x2, 0x4, 0x6})
#: A frame header in one call: 24-bit length (as 8 + 16 bits), type, flags, stream id.
_HEADER = struct.Struct(">BHBBL").unpack_from
#: Payload of BDP probe PINGs (keepalive PINGs carry another one).
BDP_PING = b"rs-bdp\x00\x00"


class FrameReceiver:
    """Mixin of :class:`~.connection.H2ClientConnection`: everything that arrives."""

    if TYPE_CHECKING:
        loop: asyncio.AbstractEventLoop
        endpoint: str
        streams: dict[int, H2Stream]
        capacity: int
        ready: asyncio.Future[None]
        goaway: bool
        closed: bool
        _pool: OriginPool
        _settings: ConnectionSettings
        _h2: DrainingH2Connection
        _keepalive: PingKeepalive
        _conn_window: ReceiveWindow
        _h2_conn_window: Any
        _bdp: BdpEstimator | None
        _rbuf: bytes
        _in_header_block: bool
        _preface_ok: bool
        _flood: ControlFrameBudget
        _goaway_last_id: int
        _goaway_code: int

        def _flush(self) -> None: ...
        def _abort(self, exc: BaseException) -> None: ...
        def _reset(self, stream_id: int, code: int) -> None: ...
        def _forget(self, s: H2Stream) -> None: ...
        def _wake_senders(self) -> None: ...
        def _shutdown(self, exc: BaseException) -> None: ...
        def _close_transport(self, abort: bool = False) -> None: ...
        def _lost_error(self, what: str) -> BaseException: ...
        def _close_after_flush(self) -> None: ...
        def close(self) -> None: ...
        def _send_bdp_probe(self) -> None: ...
        def _bdp_acked(self) -> None: ...

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
        now = self._keepalive.last_recv = self.loop.time()
        if self._rbuf:
            data = self._rbuf + data
            self._rbuf = b""
        if not self._preface_ok and not self._check_preface(data):
            return
        streams = self.streams
        conn_window = self._h2_conn_window
        max_frame = self._h2.max_inbound_frame_size  # what our SETTINGS advertise
        n = len(data)
        pos = 0
        slow_from = -1
        credit = 0
        slow = False  # h2 saw frames: it may have queued output (ACKs, updates)
        in_block = self._in_header_block
        while n - pos >= 9:
            hi, lo, ftype, flags, sid = _HEADER(data, pos)
            length = (hi << 16) | lo
            if length > max_frame:  # reject from the header; h2 would buffer it all first
                if slow_from >= 0:
                    self._slow(data[slow_from:pos])
                self._frame_too_large(length)
                return
            end = pos + 9 + length
            if end > n:
                break
            if ftype == 0 and length and not flags & 0x09 and not in_block:
                if slow_from >= 0:
                    credit += self._slow(data[slow_from:pos])
                    slow = True
                    slow_from = -1
                    if self.closed:
                        return
                s = streams.get(sid & 0x7FFFFFFF)
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
                in_block = not flags & 0x04
            elif (
                (ftype in _UNASKED or ftype > 9 or (ftype == 0 and not length))
                and not flags & 0x01  # an ACK answers us; END_STREAM is progress
                and self._flood.charge(now)
            ):
                if slow_from >= 0:
                    self._slow(data[slow_from:pos])  # what came before, in order
                self._flooded(ftype)
                return
            if slow_from < 0:
                slow_from = pos
            pos = end
        self._in_header_block = in_block
        if slow_from >= 0:
            credit += self._slow(data[slow_from:pos])
            slow = True
            if self.closed:
                return
        if pos < n:
            self._rbuf = data[pos:]
        if credit:
            increment = self._conn_window.consumed(credit)
            if increment:
                slow = True
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._h2.increment_flow_control_window(increment)
            bdp = self._bdp
            if bdp is not None and bdp.on_data(credit, now):
                self._send_bdp_probe()
                slow = True
        if slow:  # a read of plain DATA queues nothing: skip h2's data_to_send() copy
            self._flush()

    def _flooded(self, ftype: int) -> None:
        """Over the unsolicited-frame budget (flood.py): GOAWAY(ENHANCE_YOUR_CALM), close."""
        if self.closed:
            return
        budget = self._flood
        what = frame_name(ftype)
        self._pool.log.warning(
            CONNECTION_FLOOD,
            endpoint=self.endpoint,
            frame=what,
            unsolicited=budget.charged,
            streams=len(self.streams),
        )
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=_CALM, additional_data=b"control frame flood")
        self._flush()
        self._shutdown(
            FloodError(
                f"server flooded the connection with frames it sent unasked ({budget.charged} "
                f"so far, the last one {what}; allowed: {budget.burst} at once, "
                f"{budget.rate:g}/s after): closed with GOAWAY(ENHANCE_YOUR_CALM)",
                endpoint=self.endpoint,
            )
        )
        self._close_after_flush()

    def _check_preface(self, data: bytes) -> bool:
        """Until the server's first frame header is seen: is this HTTP/2 at all?

        Anything but a SETTINGS frame means the origin does not speak h2c (an HTTP/1
        status line, or http.server's bare HTML error page): fail the handshake with
        :class:`NotHttp2Error` at once, so the pool falls back to HTTP/1.1 and
        remembers it, instead of reading ``<!D`` as a 3.9 MB frame length.
        """
        verdict = server_preface_verdict(data)
        if verdict is None:
            self._rbuf = data  # fewer than 9 bytes: wait for the rest of the header
            return False
        if not verdict:
            self._abort(
                NotHttp2Error(
                    f"{self.endpoint} answered the HTTP/2 preface with {data[:24]!r}, "
                    "not a SETTINGS frame: it speaks HTTP/1.x"
                )
            )
            return False
        self._preface_ok = True
        return True

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
                f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE="
                f"{self._h2.max_inbound_frame_size}"
            )
        )

    def _protocol_error(self, exc: Exception) -> None:
        self._flush()  # h2 queued a GOAWAY naming the error
        self._abort(
            ConnectionLostError(f"HTTP/2 protocol error from server: {exc}", endpoint=self.endpoint)
        )

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
            self._pool.capacity_changed(cast("H2ClientConnection", self))
        elif isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == BDP_PING:
                self._bdp_acked()
            else:
                self._keepalive.acked()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(int(event.error_code or 0), int(event.last_stream_id or 0))
        elif isinstance(event, h2.events.InformationalResponseReceived) and self._flood.charge(
            self.loop.time()
        ):
            self._flooded(0x1)  # 1xx blocks: HEADERS without progress, charged like PINGs
        # Trailers, informational responses, settings ACKs, priority: nothing to do.

    def _on_goaway(self, error_code: int, last_stream_id: int) -> None:
        self.goaway = True
        self._goaway_last_id = last_stream_id
        self._goaway_code = error_code
        self._pool.connection_unusable(cast("H2ClientConnection", self))
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
