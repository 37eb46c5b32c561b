"""One HTTP/2 client connection without I/O: bytes in, events out (like ``h2`` itself).

:class:`H2Core` owns the ``h2`` state machine and what we add around it: the
DATA fast path, flow control (flow.py), the flood budget (flood.py) and the
keepalive and BDP probe decisions. The protocol edge (connection.py) feeds it
what the socket read (:meth:`H2Core.receive_data`), writes what it returns
from :meth:`H2Core.data_to_send`, and acts on the events (events.py). Time is
an argument (``now``), so the core runs, and is tested, without an event loop.

**DATA fast path.** h2 spends ~20 us per DATA frame (frame objects, flags, an
eager ``repr`` for its trace log, two state machines). A plain DATA frame of a
stream whose headers we already have needs none of that: we slice the payload
into the stream's buffer and update h2's own window accounting, so h2 stays
exact for every other frame it sees. Everything else (SETTINGS, HEADERS,
END_STREAM, RST_STREAM, PING, GOAWAY, padded DATA, ...) goes to h2, in order,
as whole frames. The connection window is credited on receipt (other streams
keep flowing); a stream's window only as its consumer reads.

**GOAWAY.** Streams above ``last_stream_id`` were never processed and fail
with ``GoAwayError(processed=False)`` (the transport resends them). A graceful
GOAWAY (NO_ERROR) lets the streams at or below it drain: h2 closes its state
machine on GOAWAY (python-hyper/h2#1181), so ``DrainingH2Connection`` keeps it
open for frames of existing streams; the pool puts no new stream here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import h2.events
import h2.exceptions

from ..errors import (
    ConnectionLostError,
    FloodError,
    GoAwayError,
    RefusedStreamError,
    StreamResetError,
)
from ..h2wire import (
    DEFAULT_WINDOW,
    PING,
    PRIORITY,
    SETTINGS,
    ErrorCode,
    FrameSpan,
    error_name,
    frame_length,
    split_frames,
)
from .events import (
    PING_ACKED,
    WINDOW_OPENED,
    ConnectionEnded,
    Flooded,
    GoAwayReceived,
    Received,
    SettingsReceived,
    StreamClosed,
)
from .flood import ControlFrameBudget, frame_name
from .flow import FlowControl
from .h2setup import ConnectionSettings, NotHttp2Error, new_h2_connection, server_preface_verdict
from .keepalive import Keepalive
from .stream import H2Stream

#: Payload of BDP probe PINGs; keepalive PINGs carry the other one.
BDP_PING = b"rs-bdp\x00\x00"
KEEPALIVE_PING = b"rs-alive"

_DataReceived = h2.events.DataReceived
_REFUSED = ErrorCode.REFUSED_STREAM
_CANCEL = ErrorCode.CANCEL
#: Frame types the server sends unasked that cost us work (without ACK; extension types
#: above 0x9 and empty DATA are checked in the loop).
_UNASKED = frozenset({PRIORITY, SETTINGS, PING})


class H2Core:
    """The state of one HTTP/2 client connection; every change comes in as a call."""

    def __init__(self, settings: ConnectionSettings, endpoint: str, now: float = 0.0) -> None:
        self.endpoint = endpoint
        #: Open streams by id. A stream leaves it when it ends, is reset or fails.
        self.streams: dict[int, H2Stream] = {}
        #: How many streams may be open: min(our cap, the server's MAX_CONCURRENT_STREAMS).
        self.capacity = settings.max_streams
        self.streams_opened = 0
        self.ready = False  # the server's first SETTINGS arrived
        self.goaway = False  # received GOAWAY: no new streams
        self.goaway_last_id = 0
        self.goaway_code = 0
        self.closed = False
        self.close_reason: BaseException | None = None
        self.keepalive = Keepalive(settings.ping_interval, settings.ping_timeout, now)
        self.flow = FlowControl(settings, self.keepalive)
        self._max_streams = settings.max_streams
        self._stream_window = settings.stream_window
        self._flood = ControlFrameBudget(now=now)  # frames the server sends unasked
        self._rest = b""  # an incomplete frame, waiting for its remaining bytes
        self._in_header_block = False
        self._preface_ok = False  # the server's first frame header was a SETTINGS frame
        #: h2 may hold output: :meth:`data_to_send` has something to take. The edge
        #: reads it to skip the call (most reads of DATA queue nothing).
        self.pending = False
        self._h2 = new_h2_connection(settings)
        # h2's own inbound accounting, kept exact by the DATA fast path. The fast path
        # uses private h2 attributes (present in h2 4.x); without them, h2 does it all.
        self._h2_conn_window: Any = getattr(self._h2, "_inbound_flow_control_window_manager", None)
        self._fast_path = self._h2_conn_window is not None

    # --- output ---------------------------------------------------------------------

    def initiate(self) -> None:
        """The connection preface and our SETTINGS (plus the larger connection window)."""
        self._h2.initiate_connection()
        extra = self.flow.connection.size - DEFAULT_WINDOW
        if extra > 0:
            self._h2.increment_flow_control_window(extra)
        self.pending = True

    def data_to_send(self) -> bytes:
        """What to write to the socket now (``b""``: nothing, and no copy made)."""
        if not self.pending:
            return b""
        self.pending = False
        return self._h2.data_to_send()

    # --- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Received]:
        """Take what the socket read at ``now``; return what changed, in wire order.

        A stream's own record in the list means it has news (events.py); it is listed
        when its buffer goes from empty to not, so a read of many DATA frames lists
        each stream once, with no event object per frame.
        """
        events: list[Received] = []
        if self.closed:
            return events
        self.keepalive.last_recv = now
        if self._rest:
            data = self._rest + data
            self._rest = b""
        if not self._preface_ok and not self._check_preface(data, events):
            return events
        max_frame = self._h2.max_inbound_frame_size  # what our SETTINGS advertise
        frames: list[FrameSpan] = []
        pos = split_frames(data, 0, frames, max_frame)
        streams = self.streams
        conn_window = self._h2_conn_window
        slow_from = -1
        credit = 0
        in_block = self._in_header_block
        # Literals on this path (a global lookup per frame costs): DATA is type 0x0,
        # HEADERS 0x1, PUSH_PROMISE 0x5, CONTINUATION 0x9; END_STREAM (and ACK) 0x1,
        # END_HEADERS 0x4, PADDED 0x8 (h2wire).
        for ftype, flags, sid, start, end in frames:
            if ftype == 0 and end - start > 9 and not flags & 0x09 and not in_block:
                if slow_from >= 0:
                    credit += self._slow(data[slow_from:start], events, now)
                    slow_from = -1
                    if self.closed:
                        return events
                s = streams.get(sid)
                if s is not None and s.status and s.h2_window is not None:
                    length = end - start - 9
                    try:
                        conn_window.window_consumed(length)
                        s.h2_window.window_consumed(length)
                    except h2.exceptions.ProtocolError as exc:
                        self._protocol_error(exc, events)
                        return events
                    s.h2_stream._actual_content_length += length
                    chunks = s.chunks
                    if not chunks:
                        events.append(s)
                    chunks.append(data[start + 9 : end])
                    s.unacked += length
                    credit += length
                    continue
            elif ftype == 1 or ftype == 5 or ftype == 9:  # header block: no DATA until it ends
                in_block = not flags & 0x04
            elif (
                (ftype in _UNASKED or ftype > 9 or (ftype == 0 and end - start == 9))
                and not flags & 0x01  # an ACK answers us; END_STREAM is progress
                and self._flood.charge(now)
            ):
                if slow_from >= 0:
                    self._slow(data[slow_from:start], events, now)  # what came before, in order
                self._flooded(ftype, events)
                return events
            if slow_from < 0:
                slow_from = start
        self._in_header_block = in_block
        if slow_from >= 0:
            credit += self._slow(data[slow_from:pos], events, now)
            if self.closed:
                return events
        if pos < len(data):
            if len(data) - pos >= 9 and frame_length(data, pos) > max_frame:
                # Rejected from its header: h2 would buffer all of it first.
                self._frame_too_large(frame_length(data, pos), events)
                return events
            self._rest = data[pos:]
        if credit:
            flow = self.flow
            increment = flow.connection.consumed(credit)  # credited on receipt
            if increment:
                self._grant(increment)
            bdp = flow.bdp
            if bdp is not None and bdp.on_data(credit, now):
                self._send_bdp_probe()
        return events

    def _slow(self, frames: bytes, events: list[Received], now: float) -> int:
        """Whole frames through h2; returns the DATA bytes it consumed (connection credit)."""
        self.pending = True  # ACKs, RST_STREAM, GOAWAY...
        try:
            h2_events = self._h2.receive_data(frames)
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(exc, events)
            return 0
        streams = self.streams
        credit = 0
        for event in h2_events:
            if type(event) is _DataReceived:
                n = event.flow_controlled_length
                credit += n
                s = streams.get(event.stream_id)
                if s is not None:
                    if not s.chunks:
                        events.append(s)
                    s.chunks.append(event.data)
                    s.unacked += n
            else:
                self._on_h2_event(event, events, now)
                if self.closed:
                    break
        return credit

    def _check_preface(self, data: bytes, events: list[Received]) -> bool:
        """Until the server's first frame header is seen: is this HTTP/2 at all?

        Anything but a SETTINGS frame means the origin does not speak h2c (an HTTP/1
        status line, or http.server's bare HTML error page): end the connection with
        :class:`NotHttp2Error` at once, so the pool falls back to HTTP/1.1 and
        remembers it, instead of reading ``<!D`` as a 3.9 MB frame length.
        """
        verdict = server_preface_verdict(data)
        if verdict is None:
            self._rest = data  # fewer than 9 bytes: wait for the rest of the header
            return False
        if not verdict:
            error = NotHttp2Error(
                f"{self.endpoint} answered the HTTP/2 preface with {data[:24]!r}, "
                "not a SETTINGS frame: it speaks HTTP/1.x"
            )
            self._end(error, True, events)
            return False
        self._preface_ok = True
        return True

    def _on_h2_event(self, event: h2.events.Event, events: list[Received], now: float) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            s = self.streams.get(event.stream_id)
            if s is not None:
                headers = event.headers
                for name, value in headers:
                    if name == b":status":
                        s.status = int(value)
                        break
                s.headers = [(n, v) for n, v in headers if not n.startswith(b":")]
                events.append(s)
        elif isinstance(event, h2.events.StreamEnded):
            s = self.streams.get(event.stream_id)
            if s is not None:
                s.ended = True
                if not s.request_done:  # answered before our body was sent: stop sending
                    self._reset(s.stream_id, _CANCEL)
                self._forget(s, events)
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
                self._forget(s, events)
        elif isinstance(event, h2.events.WindowUpdated):
            events.append(WINDOW_OPENED)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            remote = self._h2.remote_settings.max_concurrent_streams
            self.capacity = max(0, min(self._max_streams, remote))
            self.ready = True
            events.append(SettingsReceived(self.capacity))
        elif isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == BDP_PING:
                increment = self.flow.probe_acked(now)
                if increment:
                    self._grant(increment)
            elif self.keepalive.acked(now):
                events.append(PING_ACKED)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(int(event.error_code or 0), int(event.last_stream_id or 0), events)
        elif isinstance(event, h2.events.InformationalResponseReceived) and self._flood.charge(now):
            self._flooded(0x1, events)  # 1xx blocks: HEADERS without progress, charged like PINGs
        # Trailers, settings ACKs, priority: nothing to do.

    def _on_goaway(self, error_code: int, last_stream_id: int, events: list[Received]) -> None:
        self.goaway = True
        self.goaway_last_id = last_stream_id
        self.goaway_code = error_code
        unprocessed = [s for sid, s in self.streams.items() if sid > last_stream_id]
        events.append(
            GoAwayReceived(
                error_code,
                last_stream_id,
                unprocessed=len(unprocessed),
                draining=len(self.streams) - len(unprocessed),
            )
        )
        name = error_name(error_code)
        for s in unprocessed:
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
            self._forget(s, events)
        if error_code != 0:
            self._end(self.lost_error("GOAWAY"), False, events)
        # A graceful GOAWAY: the edge closes once the last draining stream is done.

    def _flooded(self, ftype: int, events: list[Received]) -> None:
        """Over the unsolicited-frame budget (flood.py): GOAWAY(ENHANCE_YOUR_CALM), close."""
        if self.closed:
            return
        budget = self._flood
        what = frame_name(ftype)
        events.append(Flooded(what, budget.charged, len(self.streams)))
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(
                error_code=ErrorCode.ENHANCE_YOUR_CALM, additional_data=b"control frame flood"
            )
        self.pending = True
        error = FloodError(
            f"server flooded the connection with frames it sent unasked ({budget.charged} "
            f"so far, the last one {what}; allowed: {budget.burst} at once, "
            f"{budget.rate:g}/s after): closed with GOAWAY(ENHANCE_YOUR_CALM)",
            endpoint=self.endpoint,
        )
        self._end(error, False, events)

    def _frame_too_large(self, length: int, events: list[Received]) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=ErrorCode.FRAME_SIZE_ERROR)
        self._protocol_error(
            h2.exceptions.FrameTooLargeError(
                f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE="
                f"{self._h2.max_inbound_frame_size}"
            ),
            events,
        )

    def _protocol_error(self, exc: Exception, events: list[Received]) -> None:
        self.pending = True  # h2 queued a GOAWAY naming the error
        error = ConnectionLostError(
            f"HTTP/2 protocol error from server: {exc}", endpoint=self.endpoint
        )
        self._end(error, True, events)

    def _end(self, error: BaseException, abort: bool, events: list[Received]) -> None:
        failed = self.terminate(error)
        if failed is not None:
            events.append(ConnectionEnded(error, abort, failed))

    # --- streams ------------------------------------------------------------------------

    def open_stream(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> H2Stream:
        """Send a request's headers (``headers.request_headers``) on a new stream.

        Raises h2's ``TooManyStreamsError`` if the server lowered its limit under us.
        """
        h2c = self._h2
        stream_id = h2c.get_next_available_stream_id()
        h2c.send_headers(stream_id, headers, end_stream=end_stream)
        self.pending = True
        s = H2Stream(stream_id, self._stream_window)
        h2_stream = h2c.streams[stream_id]
        if self._fast_path and hasattr(h2_stream, "_actual_content_length"):
            s.h2_stream = h2_stream
            s.h2_window = getattr(h2_stream, "_inbound_window_manager", None)
        s.request_done = end_stream
        self.streams[stream_id] = s
        self._flood.stream_opened()
        self.streams_opened += 1
        increment = self.flow.stream_opened(s)
        if increment:
            self._grant(increment, stream_id)
        return s

    def sendable(self, s: H2Stream) -> int:
        """How many bytes of request body may go out on ``s`` now (0: wait for window)."""
        h2c = self._h2
        return min(h2c.local_flow_control_window(s.stream_id), h2c.max_outbound_frame_size)

    def send_data(self, s: H2Stream, data: bytes) -> None:
        """A piece of request body, at most :meth:`sendable` bytes."""
        self._h2.send_data(s.stream_id, data)
        self.pending = True

    def end_request(self, s: H2Stream) -> None:
        """END_STREAM: the request body is complete."""
        self._h2.end_stream(s.stream_id)
        s.request_done = True
        self.pending = True

    def reset_stream(self, s: H2Stream, code: int = _CANCEL) -> bool:
        """RST_STREAM(``code``) if ``s`` is still open; what waited unread is dropped.

        True: it was open, and its slot is free now.
        """
        s.chunks.clear()
        if self.streams.pop(s.stream_id, None) is None:
            return False
        self._reset(s.stream_id, code)
        return True

    def _reset(self, stream_id: int, code: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed in h2
            self._h2.reset_stream(stream_id, error_code=code)
        self.pending = True

    def _forget(self, s: H2Stream, events: list[Received]) -> None:
        if self.streams.pop(s.stream_id, None) is not None:
            events.append(StreamClosed(s))

    # --- flow control ------------------------------------------------------------------

    def stream_data_consumed(self, s: H2Stream, n: int, now: float) -> None:
        """The consumer took ``n`` flow-controlled bytes of ``s``: reopen its window?"""
        if s.stream_id not in self.streams:
            return  # stream over: nothing more will come on it
        increment = self.flow.stream_read(s, n, now)
        if increment:
            self._grant(increment, s.stream_id)

    def set_stream_window(self, s: H2Stream, size: int) -> None:
        """Resize one stream's receive window (growth is granted at once)."""
        increment = self.flow.resize_stream(s, size)
        if increment and s.stream_id in self.streams:
            self._grant(increment, s.stream_id)

    def set_connection_window(self, size: int) -> None:
        """Resize the connection's receive window (growth is granted at once)."""
        increment = self.flow.resize_connection(size)
        if increment:
            self._grant(increment)

    def _grant(self, increment: int, stream_id: int | None = None) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):  # stream closed in h2
            self._h2.increment_flow_control_window(increment, stream_id=stream_id)
        self.pending = True

    def _send_bdp_probe(self) -> None:
        try:
            self._h2.ping(BDP_PING)
        except h2.exceptions.ProtocolError:
            self.flow.probe_lost()
        self.pending = True

    @property
    def rtt(self) -> float | None:
        """Round-trip time: smoothed BDP probes, else the last keepalive PING, else None."""
        return self.flow.rtt

    @property
    def bdp(self) -> int:
        """The connection's bandwidth-delay product estimate (0: not measured)."""
        bdp = self.flow.bdp
        return bdp.bdp if bdp is not None else 0

    # --- liveness and closing -------------------------------------------------------------

    def send_keepalive_ping(self, now: float) -> bool:
        """PING the server (keepalive.py said it is due). False: h2 cannot send now."""
        if self.closed:
            return False
        try:
            self._h2.ping(KEEPALIVE_PING)
        except h2.exceptions.ProtocolError:
            return False
        self.pending = True
        self.keepalive.sent(now)
        return True

    def close(self) -> None:
        """GOAWAY(NO_ERROR): we close the connection (idle expiry, transport shutdown)."""
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection()
        self.pending = True

    def terminate(self, exc: BaseException) -> list[H2Stream] | None:
        """The connection is over: every open stream fails with ``exc``, which is
        returned to the caller to wake. None: it was over already."""
        if self.closed:
            return None
        self.closed = True
        self.close_reason = exc
        streams, self.streams = self.streams, {}
        failed = list(streams.values())
        for s in failed:
            s.fail(exc)
        return failed

    def lost_error(self, what: str) -> BaseException:
        """The error of the streams in flight when the connection ends (``what``: how)."""
        if self.goaway:
            return GoAwayError(
                f"{what} after GOAWAY({error_name(self.goaway_code)}, "
                f"last_stream_id={self.goaway_last_id}) before the stream finished",
                last_stream_id=self.goaway_last_id,
                error_code=self.goaway_code,
                processed=True,
                endpoint=self.endpoint,
            )
        return ConnectionLostError(what, endpoint=self.endpoint)

    def unsent_error(self) -> GoAwayError:
        """The error of a stream that never went out because of this connection's GOAWAY."""
        return GoAwayError(
            f"GOAWAY({error_name(self.goaway_code)}, last_stream_id={self.goaway_last_id}) "
            "arrived before the stream was sent: it was not processed",
            last_stream_id=self.goaway_last_id,
            error_code=self.goaway_code,
            processed=False,
            endpoint=self.endpoint,
        )
