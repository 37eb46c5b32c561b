"""limit_data: close the connection once ``bytes`` bytes went through this direction (toxiproxy)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ops import Close, Data, Op
from ..toxic import Attributes, Toxic, ToxicContext, register_toxic


class LimitDataAttributes(Attributes):
    bytes: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class LimitDataToxic(Toxic[LimitDataAttributes]):
    type_name = "limit_data"
    attributes_type = LimitDataAttributes

    def __init__(self, attrs: LimitDataAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self._sent = 0
        self._done = False

    def on_data(self, op: Data) -> list[Op]:
        if self._done:
            return []
        room = self.attrs.bytes - self._sent
        if len(op.data) < room:
            self._sent += len(op.data)
            return [op]
        self._done = True
        self._sent += room
        self.ctx.record(offset=self._sent, detail=f"bytes={self.attrs.bytes}")
        out: list[Op] = [Data(op.data[:room], op.delay)] if room > 0 else []
        out.append(Close())
        return out
