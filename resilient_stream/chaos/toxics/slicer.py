"""slicer: cut chunks into ``average_size`` +- ``size_variation`` byte pieces (toxiproxy).

Pieces go out ``delay`` microseconds apart. ``average_size`` defaults to 0 as in
toxiproxy (a Go zero value, which its API reports); 0 cuts 1-byte pieces
(toxiproxy's own slicer recurses without end on 0 and overflows its stack).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ops import Data, Op, Sleep
from ..toxic import Attributes, Toxic, register_toxic


class SlicerAttributes(Attributes):
    average_size: Annotated[int, msgspec.Meta(ge=0)] = 0
    size_variation: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Microseconds between pieces (toxiproxy's unit for this toxic).
    delay: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class SlicerToxic(Toxic[SlicerAttributes]):
    """Makes the receiver see many small reads (partial lines, split UTF-8)."""

    type_name = "slicer"
    attributes_type = SlicerAttributes
    record_on_activate = True

    def on_data(self, op: Data) -> list[Op]:
        a = self.attrs
        data = op.data
        rng = self.ctx.rng
        out: list[Op] = []
        pause = a.delay / 1_000_000.0
        pos = 0
        while pos < len(data):
            size = a.average_size
            if a.size_variation:
                size += rng.randint(-a.size_variation, a.size_variation)
            size = max(size, 1)
            if out and pause:
                out.append(Sleep(pause))
            out.append(Data(data[pos : pos + size], op.delay))
            pos += size
        return out
