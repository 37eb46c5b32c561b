"""HTTP/2 frame headers without HPACK: cut a byte stream into whole frames, build a few frames.

Only the 9-byte frame header is parsed (length, type, flags, stream id);
payloads are carried as bytes. That is enough to know which stream a frame
belongs to and how much connection flow-control window a DATA frame used.
"""

from __future__ import annotations

import struct

import msgspec

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
#: Pseudo frame type for the client connection preface.
PREFACE_TYPE = -1

FLAG_END_STREAM = 0x1
FLAG_PADDED = 0x8

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
CANCEL = 0x8

#: Frame types that change HPACK state: never drop them, or the peer's decoder desyncs.
HPACK_TYPES = frozenset({HEADERS, PUSH_PROMISE, CONTINUATION})

_HEADER = struct.Struct(">HBBBI")  # length hi16, length lo8, type, flags, R+stream id


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
            pos = self._split(data, frames)
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
            pos = self._split(view, frames, pos)
        if pos:
            del buf[:pos]
        return frames

    @staticmethod
    def _split(src: bytes | memoryview, frames: list[Frame], pos: int = 0) -> int:
        """Append the whole frames of ``src`` from ``pos``; return where the rest starts."""
        end_src = len(src)
        unpack = _HEADER.unpack_from
        while end_src - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(src, pos)
            end = pos + 9 + ((hi << 8) | lo)
            if end > end_src:
                break
            frames.append(Frame(ftype, flags, sid & 0x7FFFFFFF, bytes(src[pos:end])))
            pos = end
        return pos


def frame_header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    return _HEADER.pack(length >> 8, length & 0xFF, ftype, flags, stream_id)


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return frame_header(ftype, flags, stream_id, len(payload)) + payload


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
