"""drop_after_data_frames (HTTP/2): drop the whole connection after N DATA frames.

N is ``frames``, or drawn from ``[frames, frames_max]`` with the connection's
seeded generator when ``frames_max`` is larger. With ``reset`` the connection
is reset (RST) instead of closed (FIN).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .. import h2frames as h2
from ..h2toxic import FrameResult, H2Toxic
from ..ops import Close, Data, Reset
from ..toxic import Attributes, ToxicContext, register_toxic


class DropAfterDataFramesAttributes(Attributes):
    frames: Annotated[int, msgspec.Meta(ge=1)] = 1
    frames_max: int = 0
    reset: bool = False


@register_toxic
class DropAfterDataFramesToxic(H2Toxic[DropAfterDataFramesAttributes]):
    type_name = "drop_after_data_frames"
    attributes_type = DropAfterDataFramesAttributes

    def __init__(self, attrs: DropAfterDataFramesAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.limit = ctx.rng.randint(attrs.frames, max(attrs.frames, attrs.frames_max))
        self.done = False

    def on_frame(self, f: h2.Frame) -> FrameResult:
        if self.done:
            return []
        if f.type != h2.DATA or self.data_frames < self.limit:
            return None
        self.done = True
        how = "reset" if self.attrs.reset else "close"
        self.ctx.record(
            stream_id=f.stream_id, offset=self.data_frames, detail=f"frames={self.limit} {how}"
        )
        return [Data(f.raw), Reset() if self.attrs.reset else Close()]
