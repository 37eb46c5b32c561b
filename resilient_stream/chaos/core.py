"""One proxied connection without sockets: bytes and EOFs in, operations out.

:class:`Pipeline` chains the active toxics of one direction (in the order
they were added, like toxiproxy). :class:`ConnectionCore` owns both
directions, rolls each toxic's toxicity once per connection from the seeded
generator, sniffs whether the client speaks HTTP/2 (prior knowledge) so
HTTP/2 toxics know whether to act, and (when a request-keyed toxic is active)
feeds the client's bytes to a :class:`RequestTracker` before any toxic sees
them, so a response's toxics know which request it answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .fault_log import FaultRecord
from .h2frames import PREFACE
from .ops import DIRECTIONS, Data, Direction, Eof, Op
from .request_tracker import RequestCounts, RequestTracker
from .toxic import (
    ConnectionInfo,
    Toxic,
    ToxicContext,
    ToxicSpec,
    build_toxic,
    toxic_class,
    validate_spec,
)


class Pipeline:
    """The active toxics of one direction of one connection, in order."""

    __slots__ = ("names", "toxics")

    def __init__(self) -> None:
        self.toxics: list[Toxic[Any]] = []
        self.names: list[str] = []

    def push(self, op: Op, start: int = 0) -> list[Op]:
        """Run ``op`` through the toxics from position ``start`` on."""
        ops: list[Op] = [op]
        for toxic in self.toxics[start:] if start else self.toxics:
            out: list[Op] = []
            for o in ops:
                t = type(o)
                if t is Data:
                    out.extend(toxic.on_data(o))  # type: ignore[arg-type]
                elif t is Eof:
                    out.extend(toxic.on_eof(o))  # type: ignore[arg-type]
                else:
                    out.append(o)
            ops = out
            if not ops:
                break
        return ops

    def push_all(self, ops: Iterable[Op], start: int) -> list[Op]:
        out: list[Op] = []
        for op in ops:
            out.extend(self.push(op, start))
        return out


class ConnectionCore:
    """Sans-I/O state of one proxied connection."""

    def __init__(
        self,
        *,
        index: int,
        seed: int,
        specs: Iterable[ToxicSpec],
        clock: Callable[[], float],
        sink: Callable[[FaultRecord], None],
        requests: RequestCounts | None = None,
    ) -> None:
        self.info = ConnectionInfo(index)
        self.seed = seed
        self._clock = clock
        self._sink = sink
        self.pipes: dict[Direction, Pipeline] = {d: Pipeline() for d in DIRECTIONS}
        self._sniffed = b""
        self._opening = True
        #: Operations toxics asked for when they started (timers): run them first.
        self.open_ops: dict[Direction, list[Op]] = {d: [] for d in DIRECTIONS}
        for spec in specs:
            for direction, ops in self.add_toxic(spec).items():
                self.open_ops[direction].extend(ops)
        self._opening = False
        if any(t.uses_requests for pipe in self.pipes.values() for t in pipe.toxics):
            # HTTP/2 toxics only join at the opening, so the tracker sees every byte.
            self.info.requests = RequestTracker(RequestCounts() if requests is None else requests)

    @property
    def passthrough(self) -> bool:
        """True when no toxic is active: the edge may skip the pipeline."""
        return not (self.pipes["upstream"].toxics or self.pipes["downstream"].toxics)

    # --- bytes in ---------------------------------------------------------

    def client_data(self, data: bytes) -> list[Op]:
        """Bytes from the client (direction ``upstream``)."""
        if self.info.protocol is None:
            self._sniff(data)
        if self.info.requests is not None:
            self.info.requests.feed(data)
        return self.pipes["upstream"].push(Data(data))

    def upstream_data(self, data: bytes) -> list[Op]:
        """Bytes from the upstream server (direction ``downstream``)."""
        return self.pipes["downstream"].push(Data(data))

    def eof(self, direction: Direction) -> list[Op]:
        return self.pipes[direction].push(Eof())

    def _sniff(self, data: bytes) -> None:
        seen = self._sniffed + data[: len(PREFACE)]
        if len(seen) >= len(PREFACE):
            self.info.protocol = "h2" if seen.startswith(PREFACE) else "other"
        elif PREFACE.startswith(seen):
            self._sniffed = seen
        else:
            self.info.protocol = "other"

    # --- toxics come and go -------------------------------------------------

    def add_toxic(self, spec: ToxicSpec, position: int | None = None) -> dict[Direction, list[Op]]:
        """Roll the toxicity and, if active, append the toxic; returns its start operations."""
        cls = toxic_class(spec.type)
        if cls.needs_alignment and not self._opening:
            return {}
        ctx = ToxicContext(
            seed=self.seed, conn=self.info, spec=spec, clock=self._clock, sink=self._sink
        )
        if spec.toxicity < 1.0 and not ctx.rng.random() < spec.toxicity:
            return {}
        toxic = build_toxic(spec, ctx)
        pipe = self.pipes[spec.stream]
        at = len(pipe.toxics) if position is None else position
        pipe.toxics.insert(at, toxic)
        pipe.names.insert(at, spec.name)
        if cls.record_on_activate:
            ctx.record(detail=toxic.describe())
        ops = toxic.on_open()
        return {spec.stream: pipe.push_all(ops, at + 1)} if ops else {}

    def update_toxic(self, spec: ToxicSpec) -> None:
        """Swap new attributes into the live toxic named ``spec.name`` (if active here)."""
        pipe = self.pipes[spec.stream]
        if spec.name in pipe.names:
            pipe.toxics[pipe.names.index(spec.name)].attrs = validate_spec(spec)

    def remove_toxic(self, name: str) -> tuple[dict[Direction, list[Op]], int | None]:
        """Remove toxic ``name``; returns what it still held (run through the toxics after it)."""
        for direction, pipe in self.pipes.items():
            if name in pipe.names:
                at = pipe.names.index(name)
                toxic = pipe.toxics.pop(at)
                pipe.names.pop(at)
                if toxic in self.info.targeted:
                    self.info.targeted.remove(toxic)
                return {direction: pipe.push_all(toxic.drain(), at)}, at
        return {}, None
