"""Pacing and flushing of token streams, shared by the HTTP/1.1 and HTTP/2 edges,
and the carrying out of fault steps through each edge's primitives.

No task and no timer per token: a :class:`Scheduler` keeps one bucket per
millisecond of due streams and one loop timer per non-empty bucket, plus a
ready list run once per loop iteration (unpaced streams, streams whose flow
control window reopened). After each batch it flushes every connection that
has output, so a connection's lines of one loop iteration leave in one
``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import Protocol

from resilient_stream.refserver.injection import (
    DropConnection,
    EndBody,
    GoAway,
    Hold,
    ResetStream,
    Step,
    next_step,
)
from resilient_stream.refserver.replies import LineStream
from resilient_stream.refserver.settings import ServerSettings, ServerStats

#: Lines an unpaced stream sends per turn before letting other streams run.
UNPACED_BATCH = 16
#: Timer granularity of paced streams (seconds).
RESOLUTION = 0.001


class StreamConnection(Protocol):
    """What a protocol edge offers to the streams it carries: moving lines, and the
    primitives that fault steps are carried out with (``sid``: the HTTP/2 stream id;
    HTTP/1.1 answers one request at a time and passes 0)."""

    paused: bool
    dirty: bool
    #: Set once the server closes the connection on purpose (its streams are over).
    closing: bool

    def send_line(self, stream: Driver, line: bytes) -> bool:
        """Queue a body line; False if flow control blocks it (then ``park`` it)."""
        ...

    def end_body(self, stream: Driver, last: bytes = b"") -> None:
        """Send ``last`` (as far as flow control lets it), then end the body cleanly."""
        ...

    def park(self, stream: Driver) -> None:
        """Keep a blocked stream until the window/transport reopens."""
        ...

    def hold(self, sid: int, seconds: float, then: Step) -> None:
        """Carry out ``then`` after ``seconds``, unless the stream is over by then."""
        ...

    def drop_connection(self) -> None: ...

    def reset_stream(self, sid: int, code: int) -> None: ...

    def goaway(self, code: int, last_stream_id: int | None) -> None: ...

    def flush(self) -> None: ...

    def abort(self) -> None: ...


_log = logging.getLogger(__name__)


def carry_out(conn: StreamConnection, step: Step, sid: int, stream: Driver | None = None) -> None:
    """Carry ``step`` out on ``conn`` (``stream``: the stream it ends, mid-stream)."""
    if isinstance(step, Hold):
        if step.seconds is not None:
            conn.hold(sid, step.seconds, step.then)
    elif isinstance(step, DropConnection):
        conn.drop_connection()
    elif isinstance(step, ResetStream):
        conn.reset_stream(sid, step.code)
    elif isinstance(step, GoAway):
        conn.goaway(step.code, step.last_stream_id)
    else:  # EndBody: only mid-stream
        assert isinstance(step, EndBody) and stream is not None
        conn.end_body(stream, step.last)


class Scheduler:
    """Wakes due streams in 1 ms buckets and flushes touched connections per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, list[Driver]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._ready: list[Driver] = []
        self._ready_handle: asyncio.Handle | None = None
        self.dirty: list[StreamConnection] = []

    def ready(self, stream: Driver) -> None:
        """Run ``stream.tick()`` on the next loop iteration."""
        self._ready.append(stream)
        if self._ready_handle is None:
            self._ready_handle = self.loop.call_soon(self._run_ready)

    def at(self, when: float, stream: Driver) -> None:
        """Run ``stream.tick()`` at loop time ``when`` (rounded up to the resolution)."""
        key = int(when / RESOLUTION) + 1
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [stream]
            self._timers[key] = self.loop.call_at(key * RESOLUTION, self._fire, key)
        else:
            bucket.append(stream)

    def mark_dirty(self, conn: StreamConnection) -> None:
        if not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)

    def _fire(self, key: int) -> None:
        del self._timers[key]
        self._run(self._buckets.pop(key))

    def _run_ready(self) -> None:
        self._ready_handle = None
        batch, self._ready = self._ready, []
        self._run(batch)

    def _run(self, batch: list[Driver]) -> None:
        for s in batch:
            try:
                s.tick()
            except Exception:  # a bug in one stream must not stall the others
                _log.exception("reference server: stream failed; closing its connection")
                s.finish("faulted")
                s.conn.abort()
        self.flush()

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for c in dirty:
            c.dirty = False
            try:
                c.flush()
            except Exception:
                _log.exception("reference server: flush failed; closing the connection")
                c.abort()

    def close(self) -> None:
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        self._buckets.clear()
        if self._ready_handle is not None:
            self._ready_handle.cancel()
            self._ready_handle = None
        self._ready.clear()


class Pacing:
    """Per-server pacing parameters and the seeded jitter RNG."""

    def __init__(self, settings: ServerSettings) -> None:
        tps = settings.tokens_per_second
        self.gap = 1.0 / tps if tps > 0 else 0.0
        self.first_token_delay = settings.first_token_delay
        self.jitter = settings.jitter
        self.steps = settings.batch_steps and self.gap > 0
        self.rng = random.Random(settings.seed)

    def next_gap(self) -> float:
        if self.jitter:
            return self.gap * (1.0 + self.jitter * (2.0 * self.rng.random() - 1.0))
        return self.gap

    def first_due(self, now: float) -> float:
        """When a stream whose headers left at ``now`` sends its first token."""
        return self.on_step(now + self.first_token_delay)

    def next_due(self, due: float, now: float) -> float:
        """When the token after one due at ``due`` is due (a stream that fell behind,
        under overload, goes on from ``now`` instead of bursting to catch up)."""
        gap = self.next_gap()
        nxt = due + gap
        if nxt < now - gap:
            nxt = now
        return self.on_step(nxt)

    def on_step(self, when: float) -> float:
        """``when``, or with ``batch_steps`` the first step (multiple of the gap) at or
        after it: a due already on a step stays there (float error is not a step)."""
        if not self.steps:
            return when
        gap = self.gap
        return math.ceil(when / gap - 1e-6) * gap


class Driver:
    """Moves one stream's lines from its :class:`LineStream` into its connection."""

    __slots__ = ("conn", "done", "due", "lines", "pacing", "pending", "sched", "stats", "tag")

    def __init__(
        self,
        conn: StreamConnection,
        lines: LineStream,
        sched: Scheduler,
        pacing: Pacing,
        stats: ServerStats,
        tag: int = 0,
    ) -> None:
        self.conn = conn
        self.lines = lines
        self.sched = sched
        self.pacing = pacing
        self.stats = stats
        #: Protocol-specific id (the h2 stream id).
        self.tag = tag
        self.pending: bytes | None = None
        self.done = False
        self.due = 0.0

    def start(self) -> None:
        """Call once the response headers are queued."""
        st = self.stats
        st.streams_active += 1
        if st.streams_active > st.max_streams_active_seen:
            st.max_streams_active_seen = st.streams_active
        if self.lines.fault_due():
            self._fault()
            return
        pacing = self.pacing
        self.due = pacing.first_due(self.sched.loop.time())
        if pacing.first_token_delay > 0 or pacing.steps:
            self.sched.at(self.due, self)
        else:
            self.sched.ready(self)

    def tick(self) -> None:
        if self.done:
            return
        conn = self.conn
        if conn.closing:
            self.finish("faulted")
            return
        if conn.paused:
            conn.park(self)
            return
        lines = self.lines
        paced = self.pacing.gap > 0
        budget = 1 if paced else UNPACED_BATCH
        while True:
            line = self.pending
            if line is None:
                line = lines.next_line()
            else:
                self.pending = None
            if not conn.send_line(self, line):
                self.pending = line
                conn.park(self)
                self.sched.mark_dirty(conn)
                return
            if self.done:  # the client went away while we sent
                return
            if lines.finished:
                conn.end_body(self)
                self.finish("completed")
                self.sched.mark_dirty(conn)
                return
            if lines.fault_due():
                self.sched.mark_dirty(conn)
                self._fault()
                return
            if lines.peek_final():
                continue  # the done line follows its last token at once
            budget -= 1
            if budget == 0:
                break
        self.sched.mark_dirty(conn)
        if paced:
            self.due = due = self.pacing.next_due(self.due, self.sched.loop.time())
            self.sched.at(due, self)
        else:
            self.sched.ready(self)

    def unpark(self) -> None:
        """The window or transport reopened: continue (paced streams without a burst)."""
        if self.done:
            return
        if self.pacing.gap > 0:
            self.due = max(self.due, self.sched.loop.time() - self.pacing.gap)
        self.sched.ready(self)

    def _fault(self) -> None:
        lines = self.lines
        assert lines.fault is not None
        lines.fault_after = -1  # fires once
        step = next_step(lines.fault, lines, self.pending)
        if not isinstance(step, Hold):  # a held stream stays active until it ends
            self.finish("faulted")
        self.sched.mark_dirty(self.conn)
        carry_out(self.conn, step, self.tag, self)

    def finish(self, outcome: str) -> None:
        """End the stream's bookkeeping: "completed", "cancelled" or "faulted"."""
        if self.done:
            return
        self.done = True
        st = self.stats
        st.streams_active -= 1
        if outcome == "completed":
            st.streams_completed += 1
        elif outcome == "cancelled":
            st.streams_cancelled_by_client += 1
        else:
            st.streams_faulted += 1
