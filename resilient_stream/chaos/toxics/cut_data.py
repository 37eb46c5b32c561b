"""cut_data (HTTP/2): cut a DATA frame mid-payload (mid NDJSON line), then drop the connection.

By default the receiver gets a shorter but valid DATA frame holding the first
part of the payload, so its application sees a partial line before the
connection dies. With ``torn`` set, the frame header is sent unchanged with
only part of its payload: a torn frame the receiver's HTTP/2 parser never
completes.

With ``line_aligned`` (the default) the receiver gets exactly the stream's
bytes before the target offset, whole lines and then part of the next line,
however the sender cut its frames (torn: the whole lines in a valid frame,
then a torn frame with the partial line). ``then=reset`` resets only this
stream (RST_STREAM both ways) instead of dropping the connection, so the
other streams on it are not disturbed; a torn frame always ends the
connection.
"""

from __future__ import annotations

from typing import Literal

from .. import h2frames as h2
from ..h2toxic import FrameResult, StreamTargetedToxic, TargetAttributes
from ..ops import Close, Data, Inject, Op
from ..toxic import ToxicContext, register_toxic


class CutDataAttributes(TargetAttributes):
    torn: bool = False
    #: After the cut: ``close`` the connection, or ``reset`` only this stream.
    then: Literal["close", "reset"] = "close"


@register_toxic
class CutDataToxic(StreamTargetedToxic[CutDataAttributes]):
    type_name = "cut_data"
    attributes_type = CutDataAttributes

    def __init__(self, attrs: CutDataAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.done = False
        self.reset: set[int] = set()

    def on_frame(self, f: h2.Frame) -> FrameResult:
        if self.done:
            return []
        sid = f.stream_id
        if sid in self.reset:
            return None if f.type in h2.HPACK_TYPES else self.drop(f)
        if f.type != h2.DATA:
            return None
        a = self.attrs
        payload = f.data()
        if a.line_aligned:
            st = self.crossing(f)
            if st is None:
                return None
            keep = st.target - st.seen
            whole = payload.rfind(b"\n", 0, keep) + 1
            st.lines += payload.count(b"\n", 0, whole)
        else:
            if len(payload) < 2:
                # Nothing to cut in the middle of: let it pass (still counted).
                self.passed(f)
                return None
            st = self.crossing(f)
            if st is None:
                return None
            keep = min(max(st.target - st.seen, 1), len(payload) - 1)
            whole = 0
        torn = a.torn
        reset = a.then == "reset" and not torn
        detail = "mode=torn" if torn else "mode=partial"
        self.fired(f, st, f"{detail} then=reset" if reset else detail, keep)
        out: list[Op] = []
        if torn:
            if whole:
                out.append(Data(h2.data_frame(sid, payload[:whole])))
            if a.line_aligned:
                # A header announcing the rest of the payload, and only part of it.
                header = h2.frame_header(h2.DATA, 0, sid, len(payload) - whole)
                out.append(Data(header + payload[whole:keep]))
            else:
                out.append(Data(f.raw[: 9 + keep]))
        elif keep:
            out.append(Data(h2.data_frame(sid, payload[:keep])))
        if not reset:
            self.done = True
            out.append(Close())
            return out
        self.reset.add(sid)
        self.credit(f.length - keep)
        out.append(Data(h2.rst_stream(sid, h2.INTERNAL_ERROR)))
        out.append(Inject(h2.rst_stream(sid, h2.CANCEL), self.source))
        return out
