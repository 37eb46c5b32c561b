"""The chaos proxy's frames: whole frames as objects, cut from a byte stream, and a few builders.

The wire facts (frame types, flags, the frame header, the frame-splitting loop,
error codes) are :mod:`resilient_stream.h2wire`, shared with the client
transport; the names the toxics use are re-exported here. Only the 9-byte frame
header is parsed (length, type, flags, stream id); payloads are carried as
bytes. That is enough to know which stream a frame belongs to and how much
connection flow-control window a DATA frame used.
"""

from __future__ import annotations

import msgspec

from ..h2wire import (
    CLIENT_PREFACE,
    CONTINUATION,
    DATA,
    FLAG_END_STREAM,
    FLAG_PADDED,
    GOAWAY,
    HEADERS,
    PING,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    FrameSpan,
    pack_header,
    split_frames,
)

__all__ = [
    "CANCEL",
    "CONTINUATION",
    "DATA",
    "FLAG_END_STREAM",
    "FLAG_PADDED",
    "GOAWAY",
    "HEADERS",
    "HPACK_TYPES",
    "INTERNAL_ERROR",
    "NO_ERROR",
    "PING",
    "PREFACE",
    "PREFACE_TYPE",
    "PRIORITY",
    "PROTOCOL_ERROR",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "WINDOW_UPDATE",
    "Frame",
    "FrameSplitter",
    "NotHttp2",
    "data_frame",
    "frame",
    "frame_header",
    "goaway",
    "rst_stream",
    "window_update",
]

PREFACE = CLIENT_PREFACE
#: Pseudo frame type for the client connection preface.
PREFACE_TYPE = -1

# The codes the toxics write, as plain ints (toxic attributes are JSON numbers).
NO_ERROR = int(ErrorCode.NO_ERROR)
PROTOCOL_ERROR = int(ErrorCode.PROTOCOL_ERROR)
INTERNAL_ERROR = int(ErrorCode.INTERNAL_ERROR)
CANCEL = int(ErrorCode.CANCEL)

#: Frame types that change HPACK state: never drop them, or the peer's decoder desyncs.
HPACK_TYPES = frozenset({HEADERS, PUSH_PROMISE, CONTINUATION})


class Frame(msgspec.Struct, gc=False):
    """One whole frame; ``raw`` is header plus payload, exactly as received."""

    type: int
    flags: int
    stream_id: int
    raw: bytes

    @property
    def length(self) -> int:
        return len(self.raw) - 9

    @property
    def end_stream(self) -> bool:
        return bool(self.flags & FLAG_END_STREAM) and self.type in (DATA, HEADERS)

    def data(self) -> bytes:
        """DATA payload without padding."""
        payload = self.raw[9:]
        if self.flags & FLAG_PADDED and payload:
            return payload[1 : len(payload) - payload[0]]
        return payload


class NotHttp2(Exception):
    """The bytes do not start with the client preface; ``pending`` holds what was buffered."""

    def __init__(self, pending: bytes) -> None:
        super().__init__("not HTTP/2 prior knowledge")
        self.pending = pending


class FrameSplitter:
    """Turns chunks of a byte stream into whole frames (keeps partial frames for later)."""

    __slots__ = ("_buf", "_preface")

    def __init__(self, *, expect_preface: bool) -> None:
        self._buf = bytearray()
        self._preface = expect_preface

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        frames: list[Frame] = []
        if not buf and not self._preface:
            # The common case: the last read ended on a frame boundary. Slice frames
            # straight out of ``data`` (one copy each) instead of going through ``buf``.
            pos = _frames(data, 0, frames)
            if pos < len(data):
                buf += data[pos:]
            return frames
        buf += data
        pos = 0
        if self._preface:
            n = min(len(buf), len(PREFACE))
            if buf[:n] != PREFACE[:n]:
                raise NotHttp2(self.take_buffer())
            if n < len(PREFACE):
                return frames
            frames.append(Frame(PREFACE_TYPE, 0, 0, PREFACE))
            pos = len(PREFACE)
            self._preface = False
        with memoryview(buf) as view:
            pos = _frames(view, pos, frames)
        if pos:
            del buf[:pos]
        return frames


def _frames(src: bytes | memoryview, pos: int, frames: list[Frame]) -> int:
    """Append the whole frames of ``src`` from ``pos`` as :class:`Frame` objects."""
    spans: list[FrameSpan] = []
    pos = split_frames(src, pos, spans)
    frames.extend(
        [Frame(ftype, flags, sid, bytes(src[start:end])) for ftype, flags, sid, start, end in spans]
    )
    return pos


#: The 9-byte header of a frame (``h2wire.pack_header``).
frame_header = pack_header


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return pack_header(ftype, flags, stream_id, len(payload)) + payload


def rst_stream(stream_id: int, error_code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, error_code.to_bytes(4, "big"))


def window_update(stream_id: int, increment: int) -> bytes:
    """WINDOW_UPDATE; an increment of 0 is a protocol error, so callers must skip it."""
    return frame(WINDOW_UPDATE, 0, stream_id, (increment & 0x7FFFFFFF).to_bytes(4, "big"))


def goaway(last_stream_id: int, error_code: int = NO_ERROR, debug: bytes = b"") -> bytes:
    payload = (last_stream_id & 0x7FFFFFFF).to_bytes(4, "big") + error_code.to_bytes(4, "big")
    return frame(GOAWAY, 0, 0, payload + debug)


def data_frame(stream_id: int, payload: bytes, flags: int = 0) -> bytes:
    return frame(DATA, flags, stream_id, payload)
