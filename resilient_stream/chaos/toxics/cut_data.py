"""cut_data (HTTP/2): cut a DATA frame mid-payload (mid NDJSON line), then drop the connection.

By default the receiver gets a shorter but valid DATA frame holding the first
part of the payload, so its application sees a partial line before the
connection dies. With ``torn`` set, the frame header is sent unchanged with
only part of its payload: a torn frame the receiver's HTTP/2 parser never
completes.
"""

from __future__ import annotations

from .. import h2frames as h2
from ..h2toxic import FrameResult, StreamTargetedToxic, TargetAttributes
from ..ops import Close, Data
from ..toxic import ToxicContext, register_toxic


class CutDataAttributes(TargetAttributes):
    torn: bool = False


@register_toxic
class CutDataToxic(StreamTargetedToxic[CutDataAttributes]):
    type_name = "cut_data"
    attributes_type = CutDataAttributes

    def __init__(self, attrs: CutDataAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.done = False

    def on_frame(self, f: h2.Frame) -> FrameResult:
        if self.done:
            return []
        if f.type != h2.DATA:
            return None
        payload = f.data()
        if len(payload) < 2:
            # Nothing to cut in the middle of: let it pass (still counted).
            self.passed(f)
            return None
        st = self.crossing(f)
        if st is None:
            return None
        keep = min(max(st.target - st.seen, 1), len(payload) - 1)
        self.done = True
        mode = "torn" if self.attrs.torn else "partial"
        self.fired(f, st, f"mode={mode}")
        torn = self.attrs.torn
        cut = f.raw[: 9 + keep] if torn else h2.data_frame(f.stream_id, payload[:keep])
        return [Data(cut), Close()]
