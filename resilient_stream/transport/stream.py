"""One HTTP/2 stream's receive state: what arrived, and its receive window (sans-I/O).

The core (:mod:`.core`) fills it: the response status and headers, the DATA
payloads in :attr:`H2Stream.chunks`, END_STREAM, the error that ended it. The
response body (:mod:`.response`) takes everything buffered at once, so a
reader that falls behind gets large pieces instead of one small chunk per
wake-up. The only I/O-side slot is :attr:`H2Stream.waiter`: the reader parks a
Future there while it waits, and the protocol edge resolves it when the core
reports news for this stream. The core never touches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .windows import ReceiveWindow


class H2Stream:
    """Receive-side state of one request/response exchange on a connection."""

    __slots__ = (
        "chunks",
        "ended",
        "error",
        "eval_at",
        "h2_stream",
        "h2_window",
        "headers",
        "rate",
        "read_bytes",
        "request_done",
        "status",
        "stream_id",
        "unacked",
        "waiter",
        "window",
    )

    def __init__(self, stream_id: int, window: int) -> None:
        self.stream_id = stream_id
        self.status = 0  # 0 until the response headers arrive
        #: The response's headers, from their arrival until the response is made of them.
        self.headers: Sequence[tuple[bytes, bytes]] = ()
        self.chunks: list[bytes] = []
        self.unacked = 0  # flow-controlled bytes received but not yet read by the consumer
        self.ended = False  # END_STREAM seen: chunks hold the rest of the body
        self.request_done = False  # we sent END_STREAM
        self.error: BaseException | None = None
        self.window = ReceiveWindow(window)
        #: The reader's wake-up Future while it waits (set and resolved by the I/O edge).
        self.waiter: Any = None
        self.h2_stream: Any = None  # h2's H2Stream (window + content-length bookkeeping)
        self.h2_window: Any = None  # its inbound WindowManager
        # Adaptive sizing (flow.py): bytes read since eval_at, smoothed read rate (B/s).
        self.read_bytes = 0
        self.eval_at = 0.0
        self.rate = 0.0

    def fail(self, exc: BaseException) -> None:
        """Record why the stream failed; the first cause wins."""
        if self.error is None:
            self.error = exc
