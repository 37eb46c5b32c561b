"""reset_stream (HTTP/2): RST_STREAM one stream mid-body, to both sides; the others go on.

The receiver gets RST_STREAM(``error_code``), the sender RST_STREAM(CANCEL).
Later frames of that stream are dropped, except header blocks (HPACK state
must stay in sync), and dropped DATA is credited back to the sender's
connection window so the connection stays healthy. With ``line_aligned`` the
receiver first gets the crossing frame's whole lines before the target.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .. import h2frames as h2
from ..h2toxic import FrameResult, StreamTargetedToxic, TargetAttributes
from ..ops import Data, Inject
from ..toxic import ToxicContext, register_toxic


class ResetStreamAttributes(TargetAttributes):
    error_code: Annotated[int, msgspec.Meta(ge=0)] = h2.INTERNAL_ERROR


@register_toxic
class ResetStreamToxic(StreamTargetedToxic[ResetStreamAttributes]):
    type_name = "reset_stream"
    attributes_type = ResetStreamAttributes

    def __init__(self, attrs: ResetStreamAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.reset: set[int] = set()

    def on_frame(self, f: h2.Frame) -> FrameResult:
        sid = f.stream_id
        if sid in self.reset:
            return None if f.type in h2.HPACK_TYPES else self.drop(f)
        if f.type != h2.DATA:
            return None
        st = self.crossing(f)
        if st is None:
            return None
        code = self.attrs.error_code
        prefix = self.line_prefix(f, st)
        self.fired(f, st, f"error_code={code}", len(prefix))
        self.reset.add(sid)
        out = self.forward_part(f, prefix)
        out.append(Data(h2.rst_stream(sid, code)))
        out.append(Inject(h2.rst_stream(sid, h2.CANCEL), self.source))
        return out
