"""What a toxic asks the proxy to do: plain values, no I/O.

Toxics turn the bytes (and the end of file) of one direction into a list of
these operations. The socket edge (:mod:`resilient_stream.chaos.connection`)
carries them out, so every decision can be tested without a socket.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: A direction, named like toxiproxy: ``upstream`` is client -> server data,
#: ``downstream`` is server -> client data.
Direction = Literal["upstream", "downstream"]
#: One end of a proxied connection.
Side = Literal["client", "upstream"]

DIRECTIONS: tuple[Direction, Direction] = ("upstream", "downstream")


class Data(msgspec.Struct, gc=False):
    """Forward ``data`` in this direction, not before ``delay`` seconds after it arrived."""

    data: bytes
    delay: float = 0.0


class Sleep(msgspec.Struct, gc=False):
    """Pause this direction for ``seconds`` (serial: later operations wait too)."""

    seconds: float


class Eof(msgspec.Struct, gc=False):
    """The source half-closed: half-close the destination (or close when both are done)."""


class Inject(msgspec.Struct, gc=False):
    """Write ``data`` to one ``side`` right away (e.g. a WINDOW_UPDATE back to the sender)."""

    data: bytes
    side: Side


class Close(msgspec.Struct, gc=False):
    """Close both ends of the connection (FIN), after flushing what was written."""


class Reset(msgspec.Struct, gc=False):
    """Reset both ends of the connection (RST, SO_LINGER 0)."""


class Later(msgspec.Struct, gc=False):
    """Run ``ops`` (only Inject, Close, Reset) ``delay`` seconds from now, outside the pipeline."""

    delay: float
    ops: list[Inject | Close | Reset]


Op = Data | Sleep | Eof | Inject | Close | Reset | Later


def source_of(direction: Direction) -> Side:
    """The side that sends the bytes of ``direction``."""
    return "client" if direction == "upstream" else "upstream"


def destination_of(direction: Direction) -> Side:
    """The side that receives the bytes of ``direction``."""
    return "upstream" if direction == "upstream" else "client"
