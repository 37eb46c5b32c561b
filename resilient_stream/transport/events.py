"""What :meth:`.core.H2Core.receive_data` reports, besides the streams with news.

``receive_data`` returns a list in wire order. An :class:`~.stream.H2Stream`
in it means "this stream has news" (headers, data, its end or its error are
already in its state): the I/O edge wakes its reader. It is the stream's own
record rather than an event object so that the DATA fast path creates no
object per frame for it. Everything else is one of the small events below.
"""

from __future__ import annotations

from .stream import H2Stream


class Event:
    """Base of the connection events (``__slots__`` only; nothing shared)."""

    __slots__ = ()


class StreamClosed(Event):
    """The stream left the connection (ended, reset, never processed): its slot is free.
    Its state says how it ended; wake its reader."""

    __slots__ = ("stream",)

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream


class SettingsReceived(Event):
    """The server's SETTINGS arrived (the first ones complete the handshake):
    ``capacity`` is the stream limit now, and the send windows may have changed."""

    __slots__ = ("capacity",)

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity


class WindowOpened(Event):
    """The server granted send window: a request body waiting for it may go on."""

    __slots__ = ()


class PingAcked(Event):
    """Our keepalive PING was answered: the liveness timer starts over."""

    __slots__ = ()


class GoAwayReceived(Event):
    """GOAWAY: no new streams here. Streams above ``last_stream_id`` were never
    processed (``unprocessed`` of them; they follow as :class:`StreamClosed`),
    ``draining`` may still finish."""

    __slots__ = ("draining", "error_code", "last_stream_id", "unprocessed")

    def __init__(
        self, error_code: int, last_stream_id: int, unprocessed: int, draining: int
    ) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.unprocessed = unprocessed
        self.draining = draining


class Flooded(Event):
    """Over the budget of frames the server sends unasked (flood.py); a
    :class:`ConnectionEnded` follows."""

    __slots__ = ("frame", "streams", "unsolicited")

    def __init__(self, frame: str, unsolicited: int, streams: int) -> None:
        self.frame = frame
        self.unsolicited = unsolicited
        self.streams = streams


class ConnectionEnded(Event):
    """The core is closed: every stream in ``failed`` failed with ``error``.

    ``abort``: the peer broke the protocol (or is no HTTP/2 server): drop the socket
    now. Otherwise close it once our last frames (a GOAWAY naming why) went out.
    """

    __slots__ = ("abort", "error", "failed")

    def __init__(self, error: BaseException, abort: bool, failed: list[H2Stream]) -> None:
        self.error = error
        self.abort = abort
        self.failed = failed


#: The events that carry nothing: one instance each.
WINDOW_OPENED = WindowOpened()
PING_ACKED = PingAcked()

#: One entry of what ``H2Core.receive_data`` returns.
Received = H2Stream | Event
