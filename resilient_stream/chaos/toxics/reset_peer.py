"""reset_peer: on the first data, wait ``timeout`` ms, then reset the connection (toxiproxy).

The peers see a TCP RST (SO_LINGER 0), i.e. "connection reset by peer".
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ops import Data, Op, Reset, Sleep
from ..toxic import Attributes, Toxic, ToxicContext, register_toxic


class ResetPeerAttributes(Attributes):
    timeout: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class ResetPeerToxic(Toxic[ResetPeerAttributes]):
    """The data that triggers it is not forwarded; the peer sees ECONNRESET."""

    type_name = "reset_peer"
    attributes_type = ResetPeerAttributes

    def __init__(self, attrs: ResetPeerAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self._fired = False

    def on_data(self, op: Data) -> list[Op]:
        if self._fired:
            return []
        self._fired = True
        self.ctx.record(offset=0, detail=f"timeout={self.attrs.timeout}")
        return [Sleep(self.attrs.timeout / 1000.0), Reset()]
