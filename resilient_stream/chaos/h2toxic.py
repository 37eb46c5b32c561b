"""Base classes for HTTP/2-aware toxics.

:class:`H2Toxic` cuts its direction into frames and asks ``on_frame`` what to
do with each one; frames it keeps are forwarded in one write. Dropped DATA is
credited back to the sender's connection window with a WINDOW_UPDATE, so the
other streams on the connection keep flowing.

:class:`StreamTargetedToxic` adds the seeded choice of *which* stream and
*where*: each stream gets its own generator, drawn once when its first DATA
frame passes, that decides whether it is hit (``probability``) and at which
DATA byte offset (uniform in ``[min_bytes, max_bytes]``). The generator is
keyed by the request the stream carries (body hash and how many times that
body was seen, see :mod:`.requests`), so the decision is the same whatever
connection or stream id a retried or resumed request gets; ``keyed_by=stream``
keys it by (connection index, stream id) instead. With ``line_aligned`` (the
default) the fault lands on the last line boundary before that offset and the
crossing frame is split there, so the receiver holds exactly the whole lines
before the offset, however the sender cut its frames. Wall-clock time plays
no part.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

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

    def credit(self, n: int) -> None:
        """Hand ``n`` bytes of dropped DATA back to the sender's connection window."""
        self._credit += n

    def forward_part(self, f: h2.Frame, payload: bytes) -> list[Op]:
        """Forward the start of DATA frame ``f``'s payload as a valid DATA frame of its own
        (no END_STREAM, no padding) and credit the rest back to the sender."""
        if not payload:
            return self.drop(f)
        self._credit += f.length - len(payload)
        return [Data(h2.data_frame(f.stream_id, payload))]

    def drain(self) -> list[Op]:
        rest = self._splitter.take_buffer()
        return [Data(rest)] if rest else []

    def on_frame(self, f: h2.Frame) -> FrameResult:
        raise NotImplementedError


Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
KeyedBy = Literal["request", "stream"]


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
    #: What a stream's draw is keyed by: the request it carries (replayable when
    #: clients retry and resume) or its (connection index, stream id).
    keyed_by: KeyedBy = "request"
    #: Fire at the last b"\n" before the drawn offset, forwarding the crossing
    #: frame up to it, so the receiver holds whole lines only (NDJSON, SSE).
    line_aligned: bool = True


class _StreamState:
    __slots__ = ("lines", "request", "seen", "target")

    def __init__(self, target: int, request: str) -> None:
        self.target = target  # -1: this stream is spared
        self.request = request
        self.seen = 0  # DATA payload bytes that went by
        self.lines = 0  # b"\n" among them (counted for targeted streams only)


def _payload_len(f: h2.Frame) -> int:
    return len(f.data()) if f.flags & h2.FLAG_PADDED else f.length


class StreamTargetedToxic(H2Toxic[AttrsT]):
    """An HTTP/2 toxic that hits chosen streams at chosen DATA offsets."""

    uses_requests: ClassVar[bool] = True

    def __init__(self, attrs: AttrsT, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self._streams: dict[int, _StreamState] = {}
        self.hits = 0
        ctx.conn.targeted.append(self)

    def draw(self, stream_id: int) -> tuple[int, str]:
        """(target offset or -1 if spared, request key): a pure function of the seed,
        this toxic and the stream's request (or connection index and stream id)."""
        a: Any = self.attrs
        request = ""
        tracker = self.ctx.conn.requests
        # A response answers a request the tracker has seen whole; a request body
        # going upstream is still incomplete when it starts, so it is keyed by stream.
        if a.keyed_by == "request" and self.destination == "client" and tracker is not None:
            request = tracker.key(stream_id) or ""
        rng = self.ctx.request_rng(request) if request else self.ctx.stream_rng(stream_id)
        hit = rng.random() < a.probability and a.stream_id in (0, stream_id)
        offset = rng.randint(a.min_bytes, max(a.min_bytes, a.max_bytes))
        return (offset if hit else -1), request

    def _target(self, stream_id: int) -> _StreamState:
        st = self._streams.get(stream_id)
        if st is None:
            st = self._streams[stream_id] = _StreamState(*self.draw(stream_id))
        return st

    def planned(self, stream_id: int) -> int:
        """This toxic's target offset for a stream (-1: spared), without keeping state."""
        st = self._streams.get(stream_id)
        return st.target if st is not None else self.draw(stream_id)[0]

    def _first_to_fire(self, stream_id: int, target: int) -> bool:
        """Whether this toxic's fault on the stream is planned before any other
        per-stream toxic's in the same direction (ties: the first added).

        Toxics run one after the other over each chunk, so without this the one that
        fires first would depend on how the bytes were chunked; with it, a stream gets
        the earliest planned fault only, whatever the timing.
        """
        mine = True
        for t in self.ctx.conn.targeted:
            if t is self:
                mine = False
                continue
            if t.destination != self.destination:
                continue
            other = t.planned(stream_id)
            if other >= 0 and (other < target or (other == target and mine)):
                return False
        return True

    def crossing(self, f: h2.Frame) -> _StreamState | None:
        """For a DATA frame: the stream's state if this frame crosses its target offset.

        Bookkeeping (bytes seen, end of stream) is done here too; the caller
        decides whether to fire (and must call :meth:`fired` if it does).
        """
        st = self._target(f.stream_id)
        a: Any = self.attrs
        if (
            st.target >= 0
            and st.seen + _payload_len(f) > st.target
            and not (a.max_streams and self.hits >= a.max_streams)
        ):
            if self._first_to_fire(f.stream_id, st.target):
                return st
            st.target = -1  # another toxic's fault comes first on this stream
        self.passed(f, st)
        return None

    def passed(self, f: h2.Frame, st: _StreamState | None = None) -> None:
        """Count a DATA frame that goes through untouched."""
        if st is None:
            st = self._target(f.stream_id)
        if f.flags & h2.FLAG_PADDED:
            payload = f.data()
            st.seen += len(payload)
            if st.target >= 0:
                st.lines += payload.count(b"\n")
        else:
            st.seen += f.length
            if st.target >= 0:
                st.lines += f.raw.count(b"\n", 9)
        if f.flags & h2.FLAG_END_STREAM:
            self._streams.pop(f.stream_id, None)

    def line_prefix(self, f: h2.Frame, st: _StreamState) -> bytes:
        """The part of the crossing frame to forward before the fault: with
        ``line_aligned``, its payload up to the last b"\n" before the target offset
        (maybe nothing); otherwise nothing (the whole frame is dropped)."""
        a: Any = self.attrs
        if not a.line_aligned:
            return b""
        payload = f.data()
        keep = payload.rfind(b"\n", 0, st.target - st.seen) + 1
        st.lines += payload.count(b"\n", 0, keep)
        return payload[:keep]

    def fired(self, f: h2.Frame, st: _StreamState, detail: str, forwarded: int = 0) -> None:
        """Record the fault; ``forwarded`` is how much of the crossing frame went through."""
        self.hits += 1
        self._streams.pop(f.stream_id, None)
        a: Any = self.attrs
        if a.line_aligned:
            detail = f"{detail} lines={st.lines}" if detail else f"lines={st.lines}"
        self.ctx.record(
            stream_id=f.stream_id,
            offset=st.target,
            actual=st.seen + forwarded,
            detail=detail,
            request=st.request,
        )
