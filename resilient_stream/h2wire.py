"""HTTP/2 on the wire (RFC 9113): what the client transport and the chaos proxy share.

Frame types and flags, the 9-byte frame header and the one loop that cuts a
byte stream into whole frames, the window limits, and the error-code table.
Plain constants and functions: no state, no I/O, no HPACK (``h2`` decodes
header blocks where they are needed).

The error codes are ``h2``'s own table (:class:`h2.errors.ErrorCodes`, an
``IntEnum``), so a code has one name everywhere: in ``h2``'s events, in our
errors and log fields, and in the frames the chaos proxy writes.
"""

from __future__ import annotations

import struct

from h2.errors import ErrorCodes as ErrorCode

__all__ = [
    "CLIENT_PREFACE",
    "CONTINUATION",
    "DATA",
    "DEFAULT_WINDOW",
    "FLAG_ACK",
    "FLAG_END_HEADERS",
    "FLAG_END_STREAM",
    "FLAG_PADDED",
    "GOAWAY",
    "HEADER",
    "HEADERS",
    "HEADER_SIZE",
    "INITIAL_MAX_FRAME_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_WINDOW",
    "PING",
    "PRIORITY",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "WINDOW_UPDATE",
    "ErrorCode",
    "error_name",
    "frame_length",
    "pack_header",
    "split_frames",
]

#: What a client sends first, before its SETTINGS frame (RFC 9113 section 3.4).
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
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

# Flags. ACK (SETTINGS, PING) and END_STREAM (DATA, HEADERS) share a bit.
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8

#: Largest legal flow-control window (RFC 9113 section 6.9.1).
MAX_WINDOW = 2**31 - 1
#: The window every connection and stream starts with before SETTINGS or WINDOW_UPDATE.
DEFAULT_WINDOW = 65_535
#: SETTINGS_MAX_FRAME_SIZE before any SETTINGS were exchanged (RFC 9113 section 6.5.2).
INITIAL_MAX_FRAME_SIZE = 16_384
#: The largest frame payload the 24-bit length can announce.
MAX_FRAME_SIZE = 2**24 - 1

#: The frame header: 24-bit length (as 8 + 16 bits, so one unpack reads it all),
#: type, flags, reserved bit + 31-bit stream id.
HEADER = struct.Struct(">BHBBL")
HEADER_SIZE = 9

#: One whole frame as :func:`split_frames` reports it:
#: ``(type, flags, stream_id, start, end)``; ``buf[start:end]`` is the frame with its
#: header, ``buf[start + 9:end]`` its payload.
FrameSpan = tuple[int, int, int, int, int]


def split_frames(
    buf: bytes | bytearray | memoryview,
    pos: int,
    out: list[FrameSpan],
    max_length: int = MAX_FRAME_SIZE,
) -> int:
    """Append a :data:`FrameSpan` to ``out`` for each whole frame of ``buf`` from ``pos``.

    Returns where the rest starts: an incomplete frame (keep it for the next read),
    or the header of a frame longer than ``max_length``, which the caller rejects
    from its header (:func:`frame_length`) instead of buffering it first. Frames
    are reported, not copied: the caller slices what it keeps.
    """
    n = len(buf)
    unpack = HEADER.unpack_from
    append = out.append
    while n - pos >= 9:
        hi, lo, ftype, flags, sid = unpack(buf, pos)
        length = (hi << 16) | lo
        end = pos + 9 + length
        if end > n or length > max_length:
            break
        append((ftype, flags, sid & 0x7FFFFFFF, pos, end))
        pos = end
    return pos


def frame_length(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The payload length the frame header at ``pos`` announces (needs 3 bytes)."""
    return int.from_bytes(buf[pos : pos + 3], "big")


def pack_header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 9-byte header of a frame."""
    return HEADER.pack(length >> 16, length & 0xFFFF, ftype, flags, stream_id & 0x7FFFFFFF)


def error_name(code: int) -> str:
    """``REFUSED_STREAM`` for 0x7; ``error code N`` for a code the table lacks."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error code {code}"
