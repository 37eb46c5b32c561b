"""One attempt's body into typed chunks: its framer, then its format's decoder (sans-I/O).

A stream reads every body through one :class:`RecordReader`: bytes in as they
arrive, typed chunks out (``read``), an unterminated last record at the end
(``close``). The framer (one per attempt, stateful) and the decoder (stateless,
shared) keep their own jobs; :class:`Reader` calls the two. A format may instead make
its framer the reader, with a shortcut for the read a paced stream makes on almost
every token (one whole record, nothing pending) that must answer exactly what the two
would (``formats/ollama/framing.py``): one object an attempt, not two, which 10,000
open streams notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from . import Decoder, Framer


class RecordReader(Protocol):
    def read(self, data: bytes) -> list[Any]:
        """A read's bytes in, the chunks of the records it completed out."""
        ...

    def close(self) -> bytes:
        """End of body: an unterminated last record (b"" if none)."""
        ...


class Reader:
    """``decoder.decode_lines(framer.feed(data))``, as one call a read."""

    __slots__ = ("decoder", "framer")

    def __init__(self, framer: Framer, decoder: Decoder) -> None:
        self.framer = framer
        self.decoder = decoder

    def read(self, data: bytes) -> list[Any]:
        """A read's bytes in, the chunks of the records it completed out; raises what the
        framer (a record too long) or the decoder (a bad or error record) raises."""
        return self.decoder.decode_lines(self.framer.feed(data))

    def close(self) -> bytes:
        """End of body: an unterminated last record (b"" if none)."""
        return self.framer.close()
