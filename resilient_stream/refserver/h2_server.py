"""HTTP/2 edge of the reference server: an asyncio.Protocol around an h2 state machine.

Respects flow control (a line is only sent when the client's window has room;
blocked streams resume on WINDOW_UPDATE), refuses streams beyond
SETTINGS_MAX_CONCURRENT_STREAMS with RST_STREAM(REFUSED_STREAM) instead of
killing the connection, and stops a stream's generation as soon as the
client resets it.
"""

from __future__ import annotations

import asyncio
import contextlib

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from resilient_stream.refserver import injection
from resilient_stream.refserver.core import ServerCore
from resilient_stream.refserver.injection import Step
from resilient_stream.refserver.replies import Reply
from resilient_stream.refserver.streaming import Driver, carry_out

_SC = h2.settings.SettingCodes
_RECV_WINDOW = 1 << 20
#: A stream the client reset before its reply began: closed, or already forgotten by h2.
_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError)
_CONN_RECV_WINDOW = 1 << 24


def _settings(max_streams: int) -> h2.settings.Settings:
    return h2.settings.Settings(
        client=False,
        initial_values={
            _SC.MAX_CONCURRENT_STREAMS: max_streams,
            _SC.MAX_HEADER_LIST_SIZE: 1 << 16,
            _SC.INITIAL_WINDOW_SIZE: _RECV_WINDOW,
        },
    )


class _Request:
    __slots__ = ("body", "driver", "method", "path", "pending_body", "timer")

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.body: list[bytes] = []
        self.driver: Driver | None = None
        #: Rest of a whole body waiting for flow-control window.
        self.pending_body: bytes | None = None
        self.timer: asyncio.TimerHandle | None = None


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection (h2c prior knowledge or TLS+ALPN)."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.requests: dict[int, _Request] = {}
        self.parked: list[Driver] = []
        #: Streams whose whole (non-NDJSON) body waits for window.
        self.waiting_bodies: set[int] = set()
        self.paused = False
        self.dirty = False
        self.closing = False
        self._unpark_due = False
        #: Lines written in this batch, per stream, not yet framed: one DATA frame per
        #: stream per batch (as a gateway in front of a fast model would send them),
        #: not one per token. Always whole lines.
        self._coalesced: dict[int, bytearray] = {}
        #: Bytes held in ``_coalesced``: not yet charged to the connection window by h2.
        self._held = 0

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.core.connection_opened(self)
        conn = self.conn
        # Advertise the limit, but enforce it ourselves: h2 would answer an excess
        # stream with a connection error, we answer RST_STREAM(REFUSED_STREAM).
        conn.local_settings = _settings(self.core.settings.max_concurrent_streams)
        conn.initiate_connection()
        conn.local_settings = _settings(2**31 - 1)
        conn.increment_flow_control_window(_CONN_RECV_WINDOW)
        self.flush()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            self.close()
            return
        for ev in events:
            t = type(ev)
            if t is h2.events.DataReceived:
                assert isinstance(ev, h2.events.DataReceived)
                sid = ev.stream_id
                req = self.requests.get(sid)
                if req is not None and ev.data:
                    req.body.append(ev.data)
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif t is h2.events.RequestReceived:
                assert isinstance(ev, h2.events.RequestReceived)
                self._request_received(ev)
            elif t is h2.events.StreamEnded:
                assert isinstance(ev, h2.events.StreamEnded)
                self._dispatch(ev.stream_id)
            elif t is h2.events.WindowUpdated or t is h2.events.RemoteSettingsChanged:
                self._unpark_due = True
            elif t is h2.events.StreamReset:
                assert isinstance(ev, h2.events.StreamReset)
                self._cancelled(ev.stream_id)
            elif t is h2.events.ConnectionTerminated:
                self.flush()
                self.close()
                return
        if self._unpark_due:
            self._unpark_due = False
            self._unpark_all()
        self.flush()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._unpark_all()

    def connection_lost(self, exc: Exception | None) -> None:
        outcome = "faulted" if self.closing else "cancelled"
        for req in self.requests.values():
            if req.timer is not None:
                req.timer.cancel()
            if req.driver is not None:
                req.driver.finish(outcome)
        self.requests.clear()
        self.parked.clear()
        self.core.connection_closed(self)

    # --- requests -----------------------------------------------------------------

    def _request_received(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        if len(self.requests) >= self.core.settings.max_concurrent_streams:
            self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self.core.stats.refused_streams += 1
            return
        method = path = b""
        for k, v in ev.headers or ():
            if k == b":method":
                method = v
            elif k == b":path":
                path = v
        self.requests[sid] = _Request(method.decode(), path.decode())

    def _dispatch(self, sid: int) -> None:
        req = self.requests.get(sid)
        if req is None:
            return
        body = b"".join(req.body)
        req.body = []
        reply = self.core.handler.handle(req.method, req.path, body, "h2")
        step = injection.before_headers(reply)
        if step is not None:
            carry_out(self, step, sid)
            return
        if reply.stream is not None:
            headers = [(b":status", b"200"), (b"content-type", reply.content_type)]
            try:
                self.conn.send_headers(sid, headers)
            except _GONE:
                # The client reset the stream in the same read that ended its request
                # (a cancel storm): drop this one request, the connection lives on.
                self.requests.pop(sid, None)
                return
            core = self.core
            d = Driver(self, reply.stream, core.sched, core.pacing, core.stats, tag=sid)
            req.driver = d
            d.start()
        elif reply.delay > 0:
            req.timer = self.core.loop.call_later(reply.delay, self._send_whole, sid, reply)
        else:
            self._send_whole(sid, reply)

    def _send_whole(self, sid: int, reply: Reply) -> None:
        req = self.requests.get(sid)
        if req is None:
            return
        req.timer = None
        headers = [(b":status", str(reply.status).encode()), (b"content-type", reply.content_type)]
        headers.extend(reply.extra_headers)
        body = reply.body
        headers.append((b"content-length", str(len(body)).encode()))
        if reply.head:
            body = b""
        try:
            self.conn.send_headers(sid, headers, end_stream=not body)
        except _GONE:
            self.requests.pop(sid, None)
            return
        if body:
            req.pending_body = body
            self._send_pending_body(sid, req)
        else:
            self.requests.pop(sid, None)
        self.flush()

    def _send_pending_body(self, sid: int, req: _Request) -> None:
        body = req.pending_body
        if body is None:
            return
        conn = self.conn
        while body:
            n = min(len(body), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if n <= 0:
                req.pending_body = body
                self.waiting_bodies.add(sid)
                return
            conn.send_data(sid, body[:n], end_stream=n == len(body))
            body = body[n:]
        req.pending_body = None
        self.waiting_bodies.discard(sid)
        self.requests.pop(sid, None)

    def _cancelled(self, sid: int) -> None:
        dropped = self._coalesced.pop(sid, None)
        if dropped:
            self._held -= len(dropped)
        req = self.requests.pop(sid, None)
        if req is None:
            return
        if req.timer is not None:
            req.timer.cancel()
        if req.driver is not None:
            req.driver.finish("cancelled")

    def close(self) -> None:
        """Close the connection on purpose (streams still open count as faulted)."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # --- StreamConnection (used by Driver) ----------------------------------------

    def send_line(self, stream: Driver, line: bytes) -> bool:
        conn = self.conn
        sid = stream.tag
        buf = self._coalesced.get(sid)
        held = 0 if buf is None else len(buf)
        n = len(line)
        try:
            # Held bytes are not yet counted by h2: check the stream's window and the
            # connection's (shared by every stream's held bytes) ourselves.
            if held + n > conn.local_flow_control_window(sid) or (
                self._held + n > conn.outbound_flow_control_window
            ):
                return False
            if buf is None:
                self._coalesced[sid] = bytearray(line)
            elif held + n > conn.max_outbound_frame_size:
                self._push(sid)
                self._coalesced[sid] = bytearray(line)
            else:
                buf += line
            self._held += n
        except h2.exceptions.StreamClosedError:
            self._cancelled(sid)
            stream.finish("cancelled")
            return True
        return True

    def _push(self, sid: int) -> None:
        """Frame what a stream's lines of this batch hold (may raise StreamClosedError)."""
        buf = self._coalesced.pop(sid, None)
        if buf:
            self._held -= len(buf)
            self.conn.send_data(sid, bytes(buf))

    def _push_all(self) -> None:
        for sid in list(self._coalesced):
            try:
                self._push(sid)
            except h2.exceptions.StreamClosedError:
                self._cancelled(sid)

    def end_body(self, stream: Driver, last: bytes = b"") -> None:
        sid = stream.tag
        self.requests.pop(sid, None)
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._push(sid)
            last = last[: max(0, self.conn.local_flow_control_window(sid))]
            if last:
                self.conn.send_data(sid, last)
            self.conn.end_stream(sid)

    def park(self, stream: Driver) -> None:
        self.parked.append(stream)

    def _unpark_all(self) -> None:
        parked, self.parked = self.parked, []
        for d in parked:
            d.unpark()
        if self.waiting_bodies:
            for sid in list(self.waiting_bodies):
                req = self.requests.get(sid)
                if req is None:
                    self.waiting_bodies.discard(sid)
                else:
                    self._send_pending_body(sid, req)

    def hold(self, sid: int, seconds: float, then: Step) -> None:
        req = self.requests.get(sid)
        if req is not None:
            req.timer = self.core.loop.call_later(seconds, self._held_until, sid, then)

    def _held_until(self, sid: int, then: Step) -> None:
        req = self.requests.get(sid)
        if req is not None:
            req.timer = None
            carry_out(self, then, sid)
            self.flush()

    def drop_connection(self) -> None:
        self.flush()
        self.close()

    def reset_stream(self, sid: int, code: int) -> None:
        req = self.requests.pop(sid, None)
        if req is not None and req.driver is not None:
            req.driver.finish("faulted")
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._push(sid)  # the lines before the fault go out first
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.conn.reset_stream(sid, code)

    def goaway(self, code: int, last_stream_id: int | None) -> None:
        self._push_all()
        self.conn.close_connection(error_code=code, last_stream_id=last_stream_id)
        self.flush()
        self.close()

    def flush(self) -> None:
        if self._coalesced:
            self._push_all()
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.core.stats.writes += 1
