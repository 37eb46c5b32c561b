"""slow_close: delay the close (EOF) of a direction by ``delay`` milliseconds (toxiproxy)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ops import Eof, Op, Sleep
from ..toxic import Attributes, Toxic, register_toxic


class SlowCloseAttributes(Attributes):
    delay: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class SlowCloseToxic(Toxic[SlowCloseAttributes]):
    type_name = "slow_close"
    attributes_type = SlowCloseAttributes

    def on_eof(self, op: Eof) -> list[Op]:
        self.ctx.record(detail=f"delay={self.attrs.delay}")
        return [Sleep(self.attrs.delay / 1000.0), op]
