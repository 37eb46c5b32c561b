"""How a fault is injected: what each :class:`~.faults.Fault` kind does, decided once.

Sans-I/O. Given the fault and where the exchange stands (before the headers,
or mid-stream after some token lines), :func:`next_step` says which
primitive comes next; the HTTP/1.1 and HTTP/2 edges only carry primitives
out (:class:`~.streaming.StreamConnection`, :func:`~.streaming.carry_out`):

=====================  ==========================================================
step                   HTTP/2 / HTTP/1.1
=====================  ==========================================================
:class:`Hold`          send nothing more; after ``seconds`` (if any), ``then``
:class:`DropConnection`  close the TCP connection
:class:`ResetStream`   RST_STREAM(code) / close the connection (no streams in h1)
:class:`GoAway`        GOAWAY(code, last_stream_id) and close / close
:class:`EndBody`       send ``last`` (may be empty), then end the body cleanly
=====================  ==========================================================

Two kinds change the reply itself and are decided by the handler: ``status``
(answer that status) and, on a whole-body (``stream: false``) reply,
``error_line`` (500 with the error) and ``truncate``/``truncate_line`` (a
short body, :attr:`~.replies.Reply.promised_length`).
"""

from __future__ import annotations

from dataclasses import dataclass

from resilient_stream.refserver.faults import BEFORE_HEADERS, INTERNAL_ERROR, NO_ERROR, Fault
from resilient_stream.refserver.replies import LineStream, Reply

#: Fault kinds that act on a body: mid-stream, or on a whole body by the handler.
ON_THE_BODY: frozenset[str] = frozenset({"truncate", "truncate_line", "error_line"})


@dataclass(frozen=True, slots=True)
class ResetStream:
    """RST_STREAM(``code``); HTTP/1.1 has no streams, so its edge closes the connection."""

    code: int


@dataclass(frozen=True, slots=True)
class Hold:
    """Send nothing more; after ``seconds`` (None: never, until the client goes away),
    carry out ``then``. The stream stays active meanwhile."""

    seconds: float | None
    then: ResetStream = ResetStream(INTERNAL_ERROR)


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Close the TCP connection (every stream on it is cut)."""


@dataclass(frozen=True, slots=True)
class GoAway:
    """GOAWAY(``code``, ``last_stream_id`` or the highest stream id), then close;
    HTTP/1.1 closes."""

    code: int
    last_stream_id: int | None


@dataclass(frozen=True, slots=True)
class EndBody:
    """Send ``last`` (as far as flow control lets it; may be empty), then end the body
    cleanly, without the final line."""

    last: bytes


Step = Hold | DropConnection | ResetStream | GoAway | EndBody


def next_step(fault: Fault, lines: LineStream | None = None, pending: bytes | None = None) -> Step:
    """The primitive that carries ``fault`` out now: before the headers (``lines`` None)
    or mid-stream, when ``lines`` says the fault is due (``pending``: a line that flow
    control held back, which then counts as the next line)."""
    kind = fault.kind
    if kind == "stall":
        return Hold(fault.seconds)
    if kind == "never_answer":
        return Hold(None)
    if kind == "drop_connection":
        return DropConnection()
    if kind == "reset_stream":
        return ResetStream(INTERNAL_ERROR if fault.error_code is None else fault.error_code)
    if kind == "goaway":
        code = NO_ERROR if fault.error_code is None else fault.error_code
        return GoAway(code, fault.last_stream_id)
    if lines is None or kind not in ON_THE_BODY:
        raise ValueError(f"a {kind!r} fault is decided by the handler, not carried out here")
    if kind == "truncate":
        return EndBody(b"")
    if kind == "truncate_line":
        line = pending or lines.next_line()
        return EndBody(line[: len(line) // 2])
    return EndBody(lines.error_line(fault.message))  # error_line


def before_headers(reply: Reply) -> Step | None:
    """The step to carry out instead of answering, or None to answer ``reply``: a fault
    of :data:`~.faults.BEFORE_HEADERS` but ``status`` (the reply already is its status),
    or any fault on a whole-body reply that the handler did not turn into the reply."""
    f = reply.fault
    if f is None or f.kind == "status":
        return None
    if f.kind in BEFORE_HEADERS or (reply.stream is None and f.kind not in ON_THE_BODY):
        return next_step(f)
    return None
