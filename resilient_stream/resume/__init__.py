"""Joining the attempts of one logical stream into one seamless stream (sans-I/O),
for any wire format: the assembler reads chunks through the format's chunk adapter
and plans through its planner (both in :mod:`resilient_stream.formats`)."""

from .assembler import StreamAssembler
from .verify import SeamCheck, choose_overlap

__all__ = ["SeamCheck", "StreamAssembler", "choose_overlap"]
