"""NDJSON framing, sans-I/O: body bytes in, complete lines out.

:class:`NdjsonFramer` takes bytes exactly as they arrive from the network and
hands back complete lines. It splits on ``b"\\n"`` only: never
``str.splitlines``, which also splits on ``\\x85``, ``\\u2028`` and ``\\u2029``
(legal inside JSON strings) and so corrupts NDJSON. A multi-byte UTF-8
character cut across reads needs no special care because we never decode a
partial line. A line that grows past ``max_line_bytes`` raises
:class:`LineTooLongError` instead of growing memory.

What the lines mean is the wire format's business: Ollama's decoder is
``formats/ollama/framing.py``.
"""

from __future__ import annotations

from ..errors import LineTooLongError

#: The media type of an NDJSON body (what a request for one accepts).
MEDIA_TYPE = "application/x-ndjson"

DEFAULT_MAX_LINE_BYTES = 1_048_576


class NdjsonFramer:
    """Incremental line splitter: ``feed(bytes) -> [line, ...]``.

    Lines come back without their ``\\n`` (and without a ``\\r`` before it);
    blank lines are skipped. :meth:`close` returns what is left: an
    unterminated final line, empty if the body ended on a newline.
    """

    __slots__ = ("_max", "buffer")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        #: The start of a line not yet complete (read it; only ``feed`` sets it).
        self.buffer = b""
        self._max = max_line_bytes

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a complete line."""
        return len(self.buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self.buffer:
            data = self.buffer + data
        else:
            # the usual read of a paced stream: one whole line (no scan of the rest, no
            # split, no empty remainder made)
            end = len(data) - 1
            if end > 0 and data[end] == 10 and data.find(b"\n") == end and data[end - 1] != 13:
                line = data[:end]
                if end <= self._max and not line.isspace():
                    return [line]
        end = data.rfind(b"\n")
        if end < 0:
            self.buffer = data
            if len(data) > self._max:
                raise LineTooLongError(self._max, len(data))
            return []
        self.buffer = data[end + 1 :]
        if len(self.buffer) > self._max:
            raise LineTooLongError(self._max, len(self.buffer))
        lines = data[:end].split(b"\n")
        out: list[bytes] = []
        limit = self._max
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line or line.isspace():
                continue
            if len(line) > limit:
                raise LineTooLongError(limit, len(line))
            out.append(line)
        return out

    def close(self) -> bytes:
        """End of body: return (and forget) an unterminated last line, if any."""
        rest, self.buffer = self.buffer.rstrip(b"\r"), b""
        return b"" if rest.isspace() else rest
