"""latency: delay every chunk by ``latency`` +- ``jitter`` milliseconds (toxiproxy)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ops import Data, Op
from ..toxic import Attributes, Toxic, register_toxic


class LatencyAttributes(Attributes):
    latency: Annotated[int, msgspec.Meta(ge=0)] = 0
    jitter: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class LatencyToxic(Toxic[LatencyAttributes]):
    """Each chunk leaves ``latency`` ms after it arrived (not after the previous one left)."""

    type_name = "latency"
    attributes_type = LatencyAttributes
    record_on_activate = True

    def on_data(self, op: Data) -> list[Op]:
        ms: float = self.attrs.latency
        if self.attrs.jitter:
            ms += self.ctx.rng.uniform(-self.attrs.jitter, self.attrs.jitter)
        return [Data(op.data, op.delay + max(ms, 0) / 1000.0)]
