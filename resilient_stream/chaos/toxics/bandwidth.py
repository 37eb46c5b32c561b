"""bandwidth: limit a direction to ``rate`` KB/s (toxiproxy; 1 KB = 1000 bytes)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ops import Data, Op, Sleep
from ..toxic import Attributes, Toxic, register_toxic


class BandwidthAttributes(Attributes):
    #: KB/s; 0 means no limit.
    rate: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class BandwidthToxic(Toxic[BandwidthAttributes]):
    """Sleep ``len/rate`` before each chunk; big chunks go out in 100 ms slices."""

    type_name = "bandwidth"
    attributes_type = BandwidthAttributes
    record_on_activate = True

    def on_data(self, op: Data) -> list[Op]:
        rate = self.attrs.rate * 1000  # bytes per second
        if rate <= 0:
            return [op]
        data = op.data
        piece = max(rate // 10, 1)  # 100 ms worth
        out: list[Op] = []
        for i in range(0, len(data), piece):
            part = data[i : i + piece]
            out.append(Sleep(len(part) / rate))
            out.append(Data(part, op.delay))
        return out
