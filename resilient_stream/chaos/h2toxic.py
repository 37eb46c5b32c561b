"""Base classes for HTTP/2-aware toxics.

:class:`H2Toxic` cuts its direction into frames and asks ``on_frame`` what to
do with each one; frames it keeps are forwarded in one write. Dropped DATA is
credited back to the sender's connection window with a WINDOW_UPDATE, so the
other streams on the connection keep flowing.

:class:`StreamTargetedToxic` adds the seeded choice of *which* stream and
*where*: each stream (keyed by its id, i.e. the client's request order) gets
its own generator, drawn once when its first DATA frame passes, that decides
whether it is hit (``probability``) and at which DATA byte offset
(uniform in ``[min_bytes, max_bytes]``). Wall-clock time plays no part.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from . import h2frames as h2
from .ops import Data, Inject, Op, destination_of, source_of
from .toxic import Attributes, AttrsT, Toxic, ToxicContext

#: ``on_frame`` returns None to forward the frame unchanged (the fast path).
FrameResult = list[Op] | None


class H2Toxic(Toxic[AttrsT]):
    """A toxic that acts on whole HTTP/2 frames of one direction."""

    needs_alignment: ClassVar[bool] = True

    def __init__(self, attrs: AttrsT, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self._splitter = h2.FrameSplitter(expect_preface=ctx.direction == "upstream")
        self._passthrough = False
        #: Bytes of dropped DATA to hand back to the sender (connection window).
        self._credit = 0
        self.source = source_of(ctx.direction)
        self.destination = destination_of(ctx.direction)
        self.data_frames = 0

    def on_data(self, op: Data) -> list[Op]:
        if self._passthrough:
            return [op]
        if self.destination == "client" and self.ctx.conn.protocol != "h2":
            # Not HTTP/2 prior knowledge (or the server spoke first): stay out of the way.
            self._passthrough = True
            return [Data(self._splitter.take_buffer() + op.data, op.delay)]
        try:
            frames = self._splitter.feed(op.data)
        except h2.NotHttp2 as exc:
            self._passthrough = True
            return [Data(exc.pending, op.delay)] if exc.pending else []
        out: list[Op] = []
        acc = bytearray()
        delay = op.delay
        on_frame = self.on_frame
        for f in frames:
            if f.type == h2.DATA:
                self.data_frames += 1
            res = on_frame(f)
            if res is None:
                acc += f.raw
                continue
            for r in res:
                if type(r) is Data:
                    acc += r.data
                else:
                    if acc:
                        out.append(Data(bytes(acc), delay))
                        acc.clear()
                    out.append(r)
        if acc:
            out.append(Data(bytes(acc), delay))
        if self._credit:
            out.append(Inject(h2.window_update(0, self._credit), self.source))
            self._credit = 0
        return out

    def drop(self, f: h2.Frame) -> list[Op]:
        """Drop a frame; DATA is credited back to the sender's connection window."""
        if f.type == h2.DATA:
            self._credit += f.length
        return []

    def drain(self) -> list[Op]:
        rest = self._splitter.take_buffer()
        return [Data(rest)] if rest else []

    def on_frame(self, f: h2.Frame) -> FrameResult:
        raise NotImplementedError


Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class TargetAttributes(Attributes):
    """Which streams are hit and where (DATA byte offset within the stream)."""

    #: Chance that a given stream is hit.
    probability: Probability = 1.0
    min_bytes: NonNegative = 0
    max_bytes: NonNegative = 4096
    #: At most this many streams hit per connection (0 = no limit).
    max_streams: NonNegative = 0
    #: Only this stream id may be hit (0 = any stream).
    stream_id: NonNegative = 0


class _StreamState:
    __slots__ = ("seen", "target")

    def __init__(self, target: int) -> None:
        self.target = target  # -1: this stream is spared
        self.seen = 0


class StreamTargetedToxic(H2Toxic[AttrsT]):
    """An HTTP/2 toxic that hits chosen streams at chosen DATA offsets."""

    def __init__(self, attrs: AttrsT, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self._streams: dict[int, _StreamState] = {}
        self.hits = 0

    def _target(self, stream_id: int) -> _StreamState:
        st = self._streams.get(stream_id)
        if st is None:
            a: Any = self.attrs
            rng = self.ctx.stream_rng(stream_id)
            hit = rng.random() < a.probability and a.stream_id in (0, stream_id)
            offset = rng.randint(a.min_bytes, max(a.min_bytes, a.max_bytes))
            st = self._streams[stream_id] = _StreamState(offset if hit else -1)
        return st

    def crossing(self, f: h2.Frame) -> _StreamState | None:
        """For a DATA frame: the stream's state if this frame crosses its target offset.

        Bookkeeping (bytes seen, end of stream) is done here too; the caller
        decides whether to fire (and must call :meth:`fired` if it does).
        """
        st = self._target(f.stream_id)
        a: Any = self.attrs
        if (
            st.target >= 0
            and st.seen + f.length > st.target
            and not (a.max_streams and self.hits >= a.max_streams)
        ):
            return st
        self.passed(f, st)
        return None

    def passed(self, f: h2.Frame, st: _StreamState | None = None) -> None:
        """Count a DATA frame that goes through untouched."""
        if st is None:
            st = self._target(f.stream_id)
        st.seen += f.length
        if f.flags & h2.FLAG_END_STREAM:
            self._streams.pop(f.stream_id, None)

    def fired(self, f: h2.Frame, st: _StreamState, detail: str) -> None:
        self.hits += 1
        self._streams.pop(f.stream_id, None)
        self.ctx.record(stream_id=f.stream_id, offset=st.target, actual=st.seen, detail=detail)
