"""goaway (HTTP/2): after N DATA frames, send the client GOAWAY(last_stream_id) and close.

``last_stream_id`` -1 picks, with the connection's seeded generator, one of
0 and the streams that have started a response so far; streams above it are
the ones the client may retry at once. ``close_delay`` ms keeps the
connection up after the GOAWAY (streams above ``last_stream_id`` get no more
frames meanwhile); 0 closes right away.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .. import h2frames as h2
from ..h2toxic import FrameResult, H2Toxic
from ..ops import Close, Data, Inject, Later, Op
from ..toxic import Attributes, ToxicContext, register_toxic


class GoawayAttributes(Attributes):
    frames: Annotated[int, msgspec.Meta(ge=1)] = 1
    frames_max: int = 0
    last_stream_id: Annotated[int, msgspec.Meta(ge=-1)] = -1
    error_code: Annotated[int, msgspec.Meta(ge=0)] = h2.NO_ERROR
    close_delay: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class GoawayToxic(H2Toxic[GoawayAttributes]):
    type_name = "goaway"
    attributes_type = GoawayAttributes

    def __init__(self, attrs: GoawayAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.limit = ctx.rng.randint(attrs.frames, max(attrs.frames, attrs.frames_max))
        self.open: set[int] = set()
        self.last: int | None = None

    def on_frame(self, f: h2.Frame) -> FrameResult:
        sid = f.stream_id
        if self.last is not None:
            # Grace period: only streams the GOAWAY kept may go on.
            if sid > self.last and f.type not in h2.HPACK_TYPES:
                return self.drop(f)
            return None
        if f.type == h2.HEADERS and sid:
            self.open.add(sid)
        if f.end_stream or f.type == h2.RST_STREAM:
            self.open.discard(sid)
        if f.type != h2.DATA or self.data_frames < self.limit:
            return None
        last = self.attrs.last_stream_id
        if last < 0:
            last = self.ctx.rng.choice([0, *sorted(self.open | {sid})])
        self.last = last
        self.ctx.record(
            stream_id=sid,
            offset=self.data_frames,
            detail=f"frames={self.limit} last_stream_id={last}",
        )
        frame = h2.goaway(last, self.attrs.error_code)
        send: Op = Data(frame) if self.destination == "client" else Inject(frame, "client")
        out: list[Op] = [Data(f.raw)] if sid <= last else self.drop(f)
        out.append(send)
        if self.attrs.close_delay:
            out.append(Later(self.attrs.close_delay / 1000.0, [Close()]))
        else:
            out.append(Close())
        return out
