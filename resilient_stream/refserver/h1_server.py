"""HTTP/1.1 edge of the reference server: an asyncio.Protocol around an h11 state machine.

h11 parses requests and writes the status line, headers and end of message;
body lines are framed as chunks here directly (h11's chunked writer keeps no
state, and skipping its per-chunk event is measurable). A client that closes
the connection mid-stream cancels the stream at once.
"""

from __future__ import annotations

import asyncio

import h11

from resilient_stream.refserver import injection
from resilient_stream.refserver.core import ServerCore
from resilient_stream.refserver.injection import Step
from resilient_stream.refserver.replies import Reply
from resilient_stream.refserver.streaming import Driver, carry_out

_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n"
    b"connection: close\r\n\r\nbad request"
)


class H1Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection; requests are answered one at a time (pipelining queues)."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        self.out: list[bytes] = []
        self.paused = False
        self.dirty = False
        self.closing = False
        self.chunked = True
        self.busy = False
        self.driver: Driver | None = None
        self.parked: Driver | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._request: h11.Request | None = None
        self._body: list[bytes] = []

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.core.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError:
            self._bad_request()
            return
        self._process()

    def eof_received(self) -> bool | None:
        # A client half-close while we answer is a disconnect for our purposes.
        return None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        d, self.parked = self.parked, None
        if d is not None:
            d.unpark()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.driver is not None:
            self.driver.finish("faulted" if self.closing else "cancelled")
            self.driver = None
        self.core.connection_closed(self)

    # --- requests -------------------------------------------------------------------

    def _process(self) -> None:
        conn = self.conn
        while not self.busy:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError:
                self._bad_request()
                return
            t = type(ev)
            if t is h11.Request:
                assert isinstance(ev, h11.Request)
                self._request = ev
                self._body = []
            elif t is h11.Data:
                assert isinstance(ev, h11.Data)
                self._body.append(bytes(ev.data))
            elif t is h11.EndOfMessage:
                self._dispatch()
            elif ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            elif t is h11.ConnectionClosed:
                self.close()
                return

    def _dispatch(self) -> None:
        req = self._request
        assert req is not None
        self.busy = True
        body = b"".join(self._body)
        self._body = []
        reply = self.core.handler.handle(req.method.decode(), req.target.decode(), body, "h1")
        step = injection.before_headers(reply)
        if step is not None:
            carry_out(self, step, 0)
            return
        if reply.stream is not None:
            self.chunked = self.conn.their_http_version == b"1.1"
            headers = [(b"content-type", reply.content_type)]
            if self.chunked:
                headers.append((b"transfer-encoding", b"chunked"))
            self.out.append(self.conn.send(h11.Response(status_code=200, headers=headers)) or b"")
            core = self.core
            self.driver = Driver(self, reply.stream, core.sched, core.pacing, core.stats)
            self.driver.start()
            self.flush()
        elif reply.delay > 0:
            self.timer = self.core.loop.call_later(reply.delay, self._send_whole, reply)
        else:
            self._send_whole(reply)

    def _send_whole(self, reply: Reply) -> None:
        self.timer = None
        body = reply.body
        if reply.promised_length is not None:
            # Promise the whole length, send what there is, close: a short body.
            self._write_response(reply.status, reply, reply.promised_length)
            self.out.append(body)
            self.flush()
            self.close()
            return
        self._write_response(reply.status, reply, len(body))
        if not reply.head:
            self.out.append(self.conn.send(h11.Data(data=body)) or b"")
        self._end_message()

    def _write_response(self, status: int, reply: Reply, length: int) -> None:
        headers = [(b"content-type", reply.content_type), (b"content-length", str(length).encode())]
        headers.extend(reply.extra_headers)
        self.out.append(self.conn.send(h11.Response(status_code=status, headers=headers)) or b"")

    def _end_message(self) -> None:
        self.out.append(self.conn.send(h11.EndOfMessage()) or b"")
        self.flush()
        if self.conn.our_state is h11.MUST_CLOSE:
            self.close()
            return
        try:
            self.conn.start_next_cycle()
        except h11.LocalProtocolError:
            self.close()
            return
        self.busy = False
        self.core.loop.call_soon(self._process)

    def _bad_request(self) -> None:
        if self.transport is not None:
            self.transport.write(_BAD_REQUEST)
        self.close()

    def close(self) -> None:
        """Close on purpose (a stream still open counts as faulted)."""
        self.closing = True
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # --- StreamConnection (used by Driver) ----------------------------------------

    def send_line(self, stream: Driver, line: bytes) -> bool:
        if self.chunked:
            self.out.append(b"%x\r\n%b\r\n" % (len(line), line))
        else:
            self.out.append(line)
        return True

    def end_body(self, stream: Driver, last: bytes = b"") -> None:
        if last:
            self.send_line(stream, last)
        self.driver = None
        self._end_message()

    def park(self, stream: Driver) -> None:
        self.parked = stream

    def hold(self, sid: int, seconds: float, then: Step) -> None:
        self.timer = self.core.loop.call_later(seconds, carry_out, self, then, sid)

    def drop_connection(self) -> None:
        self.close()

    def reset_stream(self, sid: int, code: int) -> None:
        self.close()  # HTTP/1.1 has no streams to reset

    def goaway(self, code: int, last_stream_id: int | None) -> None:
        self.close()  # nor a GOAWAY

    def flush(self) -> None:
        if self.out and self.transport is not None:
            data = b"".join(self.out)
            self.out.clear()
            if not self.transport.is_closing():
                self.transport.write(data)
                self.core.stats.writes += 1
