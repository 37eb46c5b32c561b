"""The two wire formats as the SDK transport sees them (sans-I/O).

For the pass-through, a :class:`Gate` says how much of the bytes received so far
may reach the SDK as the server sent them: whole records only, never past a
record the resume engine must judge first (an error record), and, for SSE, never
past a text-less record the OpenAI framer would hold back (so that what the SDK
has seen is exactly what the engine delivers when it replays those bytes after a
failure). It also spots the record that ends the stream. Both checks are byte
scans of each read (a few ``find`` calls in the steady state); no JSON is decoded.

After a resume, :meth:`Wire.encode` re-encodes the engine's chunks with the
format's encoder; ``error_body`` writes an error in the format's own shape.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..formats.anthropic import encoder as anthropic_encoder
from ..formats.anthropic import framing as anthropic_framing
from ..formats.anthropic.types import ErrorInfo as AnthropicError
from ..formats.ollama import encoder as ollama_encoder
from ..formats.openai import encoder as openai_encoder
from ..formats.openai.framing import MAX_HELD, held_back
from ..formats.openai.types import ChatCompletionChunk, CompletionChunk, ErrorInfo

#: What :meth:`Gate.scan` found at the end of what may be forwarded.
MORE, DONE, STOP = 0, 1, 2

_NDJSON_DONE = re.compile(rb'"done"\s*:\s*true')
_ERROR_KEY = re.compile(rb'"error"\s*:')
#: An error record: ``{"error": ...}``, or vLLM's older ``{"object": "error", ...}``.
_SSE_ERROR = re.compile(rb'"error"\s*:|"object"\s*:\s*"error"')
_SSE_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
#: How Ollama ends a line that is not the last: ``done`` is its last field.
_NDJSON_STEADY = b'"done":false}\n'
#: Neither in a read of whole lines: none is the last (``"done":true``) or an error.
_TRUE, _ERROR = _NDJSON_PLAIN = (b"true", b'"error"')
#: What an SSE text chunk that does not finish its choice holds (the prefix gate's needles).
FINISH_NULL = b'"finish_reason":null'
ERROR = _ERROR
_CONTENT = b'"content":"'


class Wire:
    """One wire format: its pass-through gate, its encoder, its error body."""

    content_type = ""
    #: Two needles: a read that ends with a newline and holds neither is whole records,
    #: none the last nor an error (forwarded as it is, no :meth:`scan` call). None: always scan.
    plain: tuple[bytes, bytes] | None = None
    #: A read that ends with this and holds one newline is one text record, not the last
    #: (:meth:`scan`'s first case, for the pass-through to run inline: two cheap byte
    #: compares and a 1-byte scan, no substring search). None: no such case.
    steady: bytes | None = None
    #: Whether :meth:`prefix_of` can name a prefix (the pass-through asks it then).
    learns = False

    def accepts(self, content_type: str) -> bool:
        """Is a 200 with this Content-Type this format's stream (else: not passed)?"""
        raise NotImplementedError

    def scan(self, buf: bytes) -> tuple[int, int]:
        """``(end, what)``: ``buf[:end]`` may be forwarded; ``what`` is MORE (wait for
        more bytes), DONE (``buf[:end]`` ends with the stream's last record) or STOP
        (the record at ``end`` must go to the engine: hand over)."""
        raise NotImplementedError

    def prefix_of(self, buf: bytes) -> tuple[bytes, bool] | None:
        """``(prefix, settled)``: reads that start with ``prefix`` are checked by the
        pass-through's inlined first case (None: this read names none)."""
        return None

    def encode(self, chunk: Any) -> bytes:
        raise NotImplementedError

    def remember(self, chunk: Any) -> None:
        """A chunk the SDK saw as the server's bytes (ids to keep after a resume)."""

    def error_body(self, status: int, message: str) -> bytes:
        raise NotImplementedError

    def error_record(self, message: str) -> bytes:
        """A permanent error the server named mid-stream, as one record of this format
        (the SDK raises its own error on it, as it would reading the server)."""
        raise NotImplementedError


class Ndjson(Wire):
    content_type = "application/x-ndjson"
    plain = _NDJSON_PLAIN
    steady = _NDJSON_STEADY

    def accepts(self, content_type: str) -> bool:
        return "json" in content_type or not content_type

    def scan(self, buf: bytes) -> tuple[int, int]:
        if buf.endswith(_NDJSON_STEADY):
            # the steady state (Ollama writes ``done`` last): every line a text chunk. One
            # line is the usual read (two 1-byte scans, no substring search: this runs on
            # every read of the pass-through)
            if buf.find(b"\n") == len(buf) - 1:
                return len(buf), MORE
            if buf.count(_NDJSON_STEADY) == buf.count(b"\n"):
                return len(buf), MORE
        if buf.endswith(b"\n") and buf.find(_TRUE) < 0 and buf.find(_ERROR) < 0:
            return len(buf), MORE  # whole lines, none the last or an error (Wire.plain)
        end = len(buf) if buf.endswith(b"\n") else buf.rfind(b"\n") + 1
        if not end:
            return 0, MORE
        if b'"error"' not in buf and (b"true" not in buf or _NDJSON_DONE.search(buf) is None):
            return end, MORE
        start = 0
        while start < end:
            nl = buf.index(b"\n", start)
            if _NDJSON_DONE.search(buf, start, nl):
                return nl + 1, DONE
            if _ERROR_KEY.search(buf, start, nl):
                return start, STOP
            start = nl + 1
        return end, MORE

    def encode(self, chunk: Any) -> bytes:
        return ollama_encoder.encode_line(chunk)

    def error_body(self, status: int, message: str) -> bytes:
        return ollama_encoder.error_body(message)

    def error_record(self, message: str) -> bytes:
        return ollama_encoder.error_body(message) + b"\n"


def _sse_data(block: bytes) -> bytes | None:
    """The ``data`` of one raw SSE event (None: a comment or an event without data)."""
    if block.startswith(b"data: ") and b"\n" not in block and b"\r" not in block:
        return block[6:]
    lines = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    data = [ln[6:] if ln[5:6] == b" " else ln[5:] for ln in lines if ln.startswith(b"data:")]
    return b"\n".join(data) if data else None


class Sse(Wire):
    content_type = "text/event-stream"
    learns = True

    def __init__(self) -> None:
        self.id: tuple[str, int, str, str | None] | None = None

    def accepts(self, content_type: str) -> bool:
        return "event-stream" in content_type

    def scan(self, buf: bytes) -> tuple[int, int]:
        if buf.endswith(b"\n\n"):
            # the usual read: one compact chunk with text that does not finish its choice
            # (held_back's first case, inlined: no call, no slice)
            i = buf.find(b'"content":"')
            j = i + 11
            if i < 0:
                i = buf.find(b'"text":"')
                j = i + 8
            # (``find``, not ``in``: the same search, ~70 ns less per call on bytes)
            if (
                i > 0
                and buf[j] != 34  # '"': the text is not empty
                and (
                    buf.find(b'"finish_reason":null', j) > 0  # after the text (OpenAI, vLLM)
                    or buf.find(b'"finish_reason":null', 0, i) > 0  # before it (llama-server)
                )
                and buf.find(b"\n") == len(buf) - 2
                and buf.startswith(b"data: {")
                and buf.rfind(b'"error"') < 0
            ):
                return len(buf), MORE
            # the steady state: whole events, the last a text chunk (raw newlines only
            # end lines: JSON escapes them); the text-less ones before it go with it
            last = len(buf) - 2
            if buf.find(b"\n") == last:  # the usual read: one event, one data line
                if (
                    buf.startswith(b"data: {")
                    and b'"error"' not in buf
                    and not held_back(buf[6:last])
                ):
                    return len(buf), MORE
                return self._slow(buf)
            start = buf.rfind(b"\n\n", 0, last) + 2
            data = buf[start if start > 1 else 0 : -2]
            if (
                data.startswith(b"data: {")
                and b"\n" not in data
                and b'"error"' not in data
                and not held_back(data[6:])
            ):
                return len(buf), MORE
        return self._slow(buf)

    def prefix_of(self, buf: bytes) -> tuple[bytes, bool] | None:
        """The prefix of a one-event read that scan's first case forwards whole: its
        bytes through the text key, and whether ``"finish_reason":null`` is among them.

        OpenAI, vLLM and llama-server repeat a chunk's leading fields (id, created,
        model, ...), so the pass-through checks its next reads against this prefix
        instead of calling :meth:`scan`: a read that starts with it and passes the rest
        of the first case (text not empty, ``"finish_reason":null``, one line, no
        ``"error"``) is forwarded whole, with four byte scans instead of seven and no
        call. Only the chat key (``"content":"``): a completions prefix could be
        followed by a content key the scan would judge first."""
        if buf.find(b"\n") != len(buf) - 2 or buf[-1] != 10:  # one line, one event
            return None
        i = buf.find(_CONTENT)
        j = i + 11
        if i < 0 or not buf.startswith(b"data: {") or buf[j] == 34 or buf.find(_ERROR) >= 0:
            return None
        settled = buf.find(FINISH_NULL, 0, i) > 0
        if not settled and buf.find(FINISH_NULL, j) < 0:
            return None
        return buf[:j], settled

    def _slow(self, buf: bytes) -> tuple[int, int]:
        end = start = held = 0
        for m in _SSE_END.finditer(buf):
            data = _sse_data(buf[start : m.start()])
            start = m.end()
            if data is None:
                continue
            if data == b"[DONE]":
                return start, DONE
            if _SSE_ERROR.search(data):
                return end, STOP
            if held_back(data):
                held += 1
                if held <= MAX_HELD:
                    continue
            end, held = start, 0
        return end, MORE

    def remember(self, chunk: ChatCompletionChunk | CompletionChunk) -> None:
        if self.id is None and chunk.id:
            self.id = (chunk.id, chunk.created, chunk.model, chunk.system_fingerprint)

    def encode(self, chunk: Any) -> bytes:
        self.remember(chunk)
        if self.id is not None:
            id, created, model, fingerprint = self.id
            chunk = msgspec.structs.replace(
                chunk,
                id=id,
                created=created,
                model=model,
                system_fingerprint=fingerprint
                if fingerprint is not None
                else chunk.system_fingerprint,
            )
        if chunk.done:
            return openai_encoder.encode_events([chunk])
        return openai_encoder.encode_event(chunk)

    def error_body(self, status: int, message: str) -> bytes:
        kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
        return openai_encoder.encode_error(ErrorInfo(message=message, type=kind))

    def error_record(self, message: str) -> bytes:
        error = ErrorInfo(message=message, type="invalid_request_error")
        return b"data: " + openai_encoder.encode_error(error) + b"\n\n"


_MESSAGE_DELTA_EVENT = b"event: content_block_delta\ndata: {"


class AnthropicSse(Wire):
    """Anthropic's Messages stream: named events, ``message_stop`` last, ``error`` events.

    The SDK reads one ``message_start`` (the first attempt's, id included): a resumed
    attempt's opening events are dropped by its plan's ``convert``."""

    content_type = "text/event-stream"

    def accepts(self, content_type: str) -> bool:
        return "event-stream" in content_type

    def scan(self, buf: bytes) -> tuple[int, int]:
        if buf.endswith(b"\n\n"):
            # the steady state: whole events, the last a delta (the held ones before it
            # go with it)
            start = buf.rfind(b"\n\n", 0, len(buf) - 2) + 2
            block = buf[start if start > 1 else 0 : -2]
            if block.startswith(_MESSAGE_DELTA_EVENT) and block.count(b"\n") == 1:
                return len(buf), MORE
        end = start = held = 0
        for m in _SSE_END.finditer(buf):
            data = _sse_data(buf[start : m.start()])
            start = m.end()
            if data is None:
                continue
            if anthropic_framing.is_error(data):
                return end, STOP
            if anthropic_framing.held_back(data):
                held += 1
                if held <= anthropic_framing.MAX_HELD:
                    continue
            elif b'"message_stop"' in data[:40]:
                return start, DONE
            end, held = start, 0
        return end, MORE

    def encode(self, chunk: Any) -> bytes:
        return anthropic_encoder.encode_chunk(chunk)

    def error_body(self, status: int, message: str) -> bytes:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return anthropic_encoder.encode_error(AnthropicError(type=kind, message=message))

    def error_record(self, message: str) -> bytes:
        error = AnthropicError(type="invalid_request_error", message=message)
        return anthropic_encoder.error_event(error)


#: The error ``type`` Anthropic gives each status.
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
