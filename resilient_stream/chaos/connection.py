"""The socket edge of one proxied connection: asyncio protocols that run the core's operations.

With no active toxic, bytes go straight from one transport to the other.
Otherwise operations run inline while nothing is waiting; once one must wait
(Sleep, delayed Data) the rest queue behind it and one long-lived pump task
per direction works through them. Reading from a side pauses when the other
side's write buffer is full or a direction's backlog grows too big.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .core import ConnectionCore
from .ops import (
    DIRECTIONS,
    Close,
    Data,
    Direction,
    Eof,
    Inject,
    Later,
    Op,
    Reset,
    Side,
    Sleep,
    destination_of,
)

if TYPE_CHECKING:
    from .toxic import ToxicSpec

#: Default for ``ChaosProxy(max_backlog=...)``: pause reading from a side when this
#: many bytes wait in its direction's backlog (held back by latency/bandwidth
#: toxics). A latency toxic of L seconds carries at most max_backlog / L bytes/s,
#: so 16 MiB lets 100 ms of latency pass ~160 MB/s.
BACKLOG_HIGH = 16 << 20
#: A side's write buffer above this pauses reading from the other side (asyncio's
#: default, 64 KiB, pauses and resumes so often that it halves throughput).
WRITE_BUFFER_HIGH = 1 << 20


class _Side(asyncio.Protocol):
    """One end (client or upstream) of a proxied connection."""

    def __init__(self, conn: ProxyConnection, side: Side) -> None:
        self.conn = conn
        self.side = side
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.conn.data_received(self.side, data)

    def eof_received(self) -> bool:
        self.conn.eof_received(self.side)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.side_lost(self.side)

    def pause_writing(self) -> None:
        self.conn.set_paused(self.side, "peer-buffer", True)

    def resume_writing(self) -> None:
        self.conn.set_paused(self.side, "peer-buffer", False)


class _Direction:
    """Runs one direction's operations in order, waiting where they say so."""

    def __init__(self, conn: ProxyConnection, direction: Direction) -> None:
        self.conn = conn
        self.direction = direction
        self.backlog: deque[tuple[float, Op]] = deque()
        self.backlog_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.deadline = 0.0
        self.finished = False

    def run(self, ops: list[Op], arrival: float) -> None:
        if not self.backlog:
            for i, op in enumerate(ops):
                t = type(op)
                if t is Sleep or (t is Data and op.delay > 0):  # type: ignore[union-attr]
                    ops = ops[i:]
                    break
                self.conn.apply(op, self.direction)
            else:
                return
        for op in ops:
            self.backlog.append((arrival, op))
            if type(op) is Data:
                self.backlog_bytes += len(op.data)
        if self.backlog_bytes > self.conn.max_backlog:
            self.conn.set_paused(destination_of(self.direction), "backlog", True)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._pump())
        self.wake.set()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        backlog = self.backlog
        while True:
            while not backlog:
                self.wake.clear()
                await self.wake.wait()
            arrival, op = backlog[0]
            t = type(op)
            if t is Sleep:
                now = loop.time()
                self.deadline = max(self.deadline, now) + op.seconds  # type: ignore[union-attr]
                await asyncio.sleep(self.deadline - now)
            elif t is Data:
                wait = arrival + op.delay - loop.time()  # type: ignore[union-attr]
                if wait > 0:
                    await asyncio.sleep(wait)
                self.backlog_bytes -= len(op.data)  # type: ignore[union-attr]
                self.conn.apply(op, self.direction)
            else:
                self.conn.apply(op, self.direction)
            if backlog and backlog[0][1] is op:
                backlog.popleft()
            if self.backlog_bytes <= self.conn.max_backlog // 2:
                self.conn.set_paused(destination_of(self.direction), "backlog", False)

    def cancel(self) -> None:
        self.backlog.clear()
        self.backlog_bytes = 0
        if self.task is not None:
            self.task.cancel()
            self.task = None


class ProxyConnection:
    """Glue between two transports and a :class:`ConnectionCore`."""

    def __init__(
        self,
        core: ConnectionCore,
        upstream: tuple[str, int],
        on_closed: Callable[[ProxyConnection], None],
        *,
        max_backlog: int = BACKLOG_HIGH,
    ) -> None:
        self.core = core
        self.max_backlog = max_backlog
        self.upstream_addr = upstream
        self._on_closed = on_closed
        self.sides: dict[Side, _Side | None] = {"client": None, "upstream": None}
        self.dirs: dict[Direction, _Direction] = {d: _Direction(self, d) for d in DIRECTIONS}
        self._paused: dict[Side, set[str]] = {"client": set(), "upstream": set()}
        self._timers: list[asyncio.TimerHandle] = []
        self._connect_task: asyncio.Task[None] | None = None
        self.closed = False
        self._done = False
        self._loop = asyncio.get_running_loop()

    @property
    def index(self) -> int:
        return self.core.info.index

    # --- setup ----------------------------------------------------------------

    def client_protocol(self) -> _Side:
        return _Side(self, "client")

    def side_made(self, side: _Side) -> None:
        self.sides[side.side] = side
        if side.side == "client":
            assert side.transport is not None
            side.transport.pause_reading()
            self._connect_task = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        host, port = self.upstream_addr
        try:
            await self._loop.create_connection(lambda: _Side(self, "upstream"), host, port)
        except OSError:
            self.close()
            return
        if self.closed:
            self._abort_all()
            return
        for direction, ops in self.core.open_ops.items():
            if ops:
                self.dirs[direction].run(ops, self._loop.time())
        self.core.open_ops = {}
        self._update_reading("client")

    # --- events from the sides ----------------------------------------------------

    def data_received(self, side: Side, data: bytes) -> None:
        if self.closed:
            return
        if side == "client":
            direction: Direction = "upstream"
            if self.core.passthrough and not self.dirs[direction].backlog:
                self._write("upstream", data)
                return
            ops = self.core.client_data(data)
        else:
            direction = "downstream"
            if self.core.passthrough and not self.dirs[direction].backlog:
                self._write("client", data)
                return
            ops = self.core.upstream_data(data)
        if ops:
            self.dirs[direction].run(ops, self._loop.time())

    def eof_received(self, side: Side) -> None:
        if self.closed:
            return
        direction: Direction = "upstream" if side == "client" else "downstream"
        self.dirs[direction].run(self.core.eof(direction), self._loop.time())

    def side_lost(self, side: Side) -> None:
        self.sides[side] = None
        if self.closed:
            self._maybe_done()
            return
        lost_dir: Direction = "upstream" if side == "client" else "downstream"
        other_dir: Direction = "downstream" if side == "client" else "upstream"
        # Nothing can reach the lost side any more; what it sent still goes out.
        self.dirs[other_dir].finished = True
        self.dirs[other_dir].cancel()
        if not self.dirs[lost_dir].finished:
            self.dirs[lost_dir].run(self.core.eof(lost_dir), self._loop.time())
        else:
            self.close()

    # --- toxics changing on a live connection ---------------------------------------

    def add_toxic(self, spec: ToxicSpec, position: int | None = None) -> None:
        if self.closed:
            return
        for direction, ops in self.core.add_toxic(spec, position).items():
            self.dirs[direction].run(ops, self._loop.time())

    def remove_toxic(self, name: str) -> int | None:
        if self.closed:
            return None
        held, at = self.core.remove_toxic(name)
        for direction, ops in held.items():
            if ops:
                self.dirs[direction].run(ops, self._loop.time())
        return at

    # --- carrying out operations ------------------------------------------------

    def _transport(self, side: Side) -> asyncio.Transport | None:
        s = self.sides[side]
        if s is None or s.transport is None or s.transport.is_closing():
            return None
        return s.transport

    def _write(self, side: Side, data: bytes) -> None:
        t = self._transport(side)
        if t is not None:
            t.write(data)

    def apply(self, op: Op, direction: Direction) -> None:
        if self.closed:
            return
        if isinstance(op, Data):
            self._write(destination_of(direction), op.data)
        elif isinstance(op, Inject):
            self._write(op.side, op.data)
        elif isinstance(op, Eof):
            self.dirs[direction].finished = True
            if all(d.finished for d in self.dirs.values()):
                self.close()
                return
            dest = self._transport(destination_of(direction))
            if dest is not None and dest.can_write_eof():
                dest.write_eof()
            elif dest is not None:
                self.close()
        elif isinstance(op, Close):
            self.close()
        elif isinstance(op, Reset):
            self.reset()
        elif isinstance(op, Later):
            handle = self._loop.call_later(op.delay, self._apply_later, op.ops, direction)
            self._timers.append(handle)
        # A Sleep only means something inside a direction's pump.

    def _apply_later(self, ops: list[Inject | Close | Reset], direction: Direction) -> None:
        for op in ops:
            self.apply(op, direction)

    def set_paused(self, side: Side, reason: str, paused: bool) -> None:
        # ``side`` is the side whose buffer is full (or whose direction backs up):
        # stop reading from the *other* side, the one feeding it.
        feeder: Side = "upstream" if side == "client" else "client"
        reasons = self._paused[feeder]
        if paused:
            reasons.add(reason)
        else:
            reasons.discard(reason)
        self._update_reading(feeder)

    def _update_reading(self, side: Side) -> None:
        t = self._transport(side)
        if t is None:
            return
        if side == "client" and self.sides["upstream"] is None:
            return  # still connecting upstream
        if self._paused[side]:
            if t.is_reading():
                t.pause_reading()
        elif not t.is_reading():
            t.resume_reading()

    # --- ending -------------------------------------------------------------

    def close(self) -> None:
        """Close both ends (FIN) after flushing what was already written."""
        if self.closed:
            return
        self.closed = True
        self._stop_work()
        for s in list(self.sides.values()):
            if s is not None and s.transport is not None:
                s.transport.close()
        self._maybe_done()

    def reset(self) -> None:
        """Reset both ends: SO_LINGER 0 then abort, so the peers see RST."""
        if self.closed:
            return
        self.closed = True
        self._stop_work()
        for s in list(self.sides.values()):
            if s is not None and s.transport is not None:
                sock = s.transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                s.transport.abort()
        self._maybe_done()

    def _abort_all(self) -> None:
        for s in self.sides.values():
            if s is not None and s.transport is not None:
                s.transport.abort()

    def _stop_work(self) -> None:
        for d in self.dirs.values():
            d.cancel()
        for h in self._timers:
            h.cancel()
        self._timers.clear()

    def _maybe_done(self) -> None:
        if self.closed and not self._done and all(s is None for s in self.sides.values()):
            self._done = True
            self._on_closed(self)

    def abort(self) -> None:
        """Drop the connection at once (proxy shutting down or disabled)."""
        self.closed = True
        self._stop_work()
        if self._connect_task is not None:
            self._connect_task.cancel()
        self._abort_all()
        self._maybe_done()
