"""stall_stream (HTTP/2): one stream stops receiving DATA while the others flow.

The stalled stream's DATA is dropped and credited back to the sender's
connection window, so other streams are not starved; the sender runs out of
that stream's own window and stops. With ``duration`` > 0 the stream is reset
(RST_STREAM to both sides) that many milliseconds after the stall began;
with 0 it stalls until the client gives up and cancels it. With
``line_aligned`` the stall begins right after the last whole line before the
target offset.

Limitation: the stalled data is discarded, not held, so a stall cannot be
"released" later (that would break the byte stream). Trailers (a HEADERS
frame) are still forwarded, since HPACK state must stay in sync.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .. import h2frames as h2
from ..h2toxic import FrameResult, StreamTargetedToxic, TargetAttributes
from ..ops import Inject, Later, Op
from ..toxic import ToxicContext, register_toxic


class StallStreamAttributes(TargetAttributes):
    #: Milliseconds until the stalled stream is reset; 0 = stall forever.
    duration: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class StallStreamToxic(StreamTargetedToxic[StallStreamAttributes]):
    type_name = "stall_stream"
    attributes_type = StallStreamAttributes

    def __init__(self, attrs: StallStreamAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.stalled: set[int] = set()

    def on_frame(self, f: h2.Frame) -> FrameResult:
        sid = f.stream_id
        if f.type != h2.DATA:
            return None
        if sid in self.stalled:
            return self.drop(f)
        st = self.crossing(f)
        if st is None:
            return None
        prefix = self.line_prefix(f, st)
        self.fired(f, st, f"duration={self.attrs.duration}", len(prefix))
        self.stalled.add(sid)
        out: list[Op] = self.forward_part(f, prefix)
        if self.attrs.duration:
            out.append(
                Later(
                    self.attrs.duration / 1000.0,
                    [
                        Inject(h2.rst_stream(sid, h2.CANCEL), self.source),
                        Inject(h2.rst_stream(sid, h2.INTERNAL_ERROR), self.destination),
                    ],
                )
            )
        return out
