"""Decoding llama-server's native ``/completion`` stream (sans-I/O).

The body is plain SSE (``data: {...}`` events, no ``[DONE]``), framed by
:class:`~resilient_stream.formats.sse.SseFramer`. :class:`NativeDecoder` turns
records into :class:`NativeChunk`; an ``{"error": ...}`` event raises
:class:`ServerReportedError` with what came before it kept, and events that
carry neither text, nor an id, nor the end (progress markers) are dropped, so
that every chunk delivered stands for generated tokens.
"""

from __future__ import annotations

from typing import Any

from ...errors import ServerReportedError
from ..openai.types import ErrorInfo
from ..records import RecordDecoder
from .types import NativeChunk


class NativeDecoder:
    """Records of one read in, :class:`NativeChunk` out (stateless)."""

    __slots__ = ("_records", "chunk_type")

    def __init__(self, chunk_type: type[Any]) -> None:
        if chunk_type is not NativeChunk:
            raise TypeError(f"the llamacpp framing decodes NativeChunk, not {chunk_type.__name__}")
        self.chunk_type = chunk_type
        self._records: RecordDecoder[NativeChunk] = RecordDecoder(NativeChunk)

    def decode_lines(self, lines: list[bytes]) -> list[Any]:
        out: list[Any] = []
        for chunk in self._records.decode(lines, _kept):
            if chunk.error is not None:
                exc = ServerReportedError(_error_text(chunk.error))
                exc.chunks_before = out
                raise exc
            if chunk.stop or chunk.content or chunk.tokens:
                out.append(chunk)
        return out


def _kept(chunks: list[NativeChunk]) -> list[Any]:
    return [c for c in chunks if c.error is None and (c.stop or c.content or c.tokens)]


def _error_text(err: ErrorInfo | str) -> str:
    if isinstance(err, str):
        return err
    extra = ", ".join(f"{k}={v}" for k, v in (("type", err.type), ("code", err.code)) if v)
    return f"{err.message} ({extra})" if extra else err.message
