"""Body framings a stream can be read with, by name (the pluggable wire format).

A framing turns raw body bytes into complete records (``Framer``: NDJSON
lines, SSE ``data`` payloads) and records into typed chunks (``Decoder``).
Ollama uses "ndjson"; OpenAI-compatible servers register "sse".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .ndjson import ChunkDecoder, NdjsonFramer


class Framer(Protocol):
    def feed(self, data: bytes) -> list[bytes]:
        """Bytes as they arrive in, complete records out."""
        ...

    def close(self) -> bytes:
        """End of body: an unterminated record (b"" if none)."""
        ...


class Decoder(Protocol):
    def decode_lines(self, lines: list[bytes]) -> list[Any]:
        """Records in, typed chunks out; raises MalformedChunkError / ServerReportedError
        with ``chunks_before`` set so nothing decoded is lost."""
        ...


@dataclass(frozen=True, slots=True)
class Framing:
    new_framer: Callable[[int], Framer]
    """Makes a framer given the maximum record size in bytes."""
    new_decoder: Callable[[type[Any]], Decoder]
    """Makes a decoder for a chunk type."""


_FRAMINGS: dict[str, Framing] = {
    "ndjson": Framing(new_framer=NdjsonFramer, new_decoder=ChunkDecoder),
}


def register_framing(name: str, framing: Framing) -> None:
    _FRAMINGS[name] = framing


def framing(name: str) -> Framing:
    try:
        return _FRAMINGS[name]
    except KeyError:
        raise ValueError(f"unknown framing {name!r}; known: {sorted(_FRAMINGS)}") from None
