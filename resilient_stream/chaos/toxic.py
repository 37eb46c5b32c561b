"""The toxic base class, the toxic spec (toxiproxy's JSON shape) and the registry.

A toxic type is one small class in one file under ``toxics/``: it declares its
attributes as a msgspec Struct (so the REST API and the CLI validate them) and
turns ``Data``/``Eof`` operations into new operations. Adding a fault means
adding one file; :func:`register_toxic` puts the class in the registry by its
toxiproxy type name.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, TypeVar

import msgspec

from .fault_log import FaultRecord
from .ops import Data, Direction, Eof, Op
from .request_tracker import RequestTracker

Protocol = Literal["h2", "other"]


class ChaosError(Exception):
    """Base of the chaos proxy's own errors."""


class InvalidToxicError(ChaosError, ValueError):
    """A toxic spec names an unknown type or has bad attributes."""


class ToxicSpec(msgspec.Struct, kw_only=True):
    """A toxic as toxiproxy's REST API describes it."""

    type: str
    name: str = ""
    stream: Direction = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.type}_{self.stream}"


class ConnectionInfo:
    """What the toxics of one connection share: its index, the protocol the client
    speaks and (for request-keyed HTTP/2 toxics) which request each stream carries."""

    __slots__ = ("index", "protocol", "requests", "targeted")

    def __init__(self, index: int) -> None:
        self.index = index
        #: None until the client's first bytes tell (HTTP/2 preface or not).
        self.protocol: Protocol | None = None
        #: Fed with the client's bytes by the connection core when a toxic needs it.
        self.requests: RequestTracker | None = None
        #: The per-stream (HTTP/2) toxics active here, in the order they were added:
        #: they agree on which of them hits a stream first.
        self.targeted: list[Any] = []


def derive_rng(seed: int, *keys: object) -> random.Random:
    """A Random seeded from ``seed`` and ``keys`` (sha512 of the text: stable across runs).

    Every decision of a toxic on a connection (or on one HTTP/2 stream) has its
    own generator, so adding a toxic or reordering streams does not shift the
    random numbers another decision sees.
    """
    return random.Random(":".join([str(seed), *map(str, keys)]))


class ToxicContext:
    """Where one toxic instance lives: proxy seed, connection, direction, fault sink."""

    __slots__ = ("_clock", "_sink", "conn", "direction", "kind", "name", "rng", "seed")

    def __init__(
        self,
        *,
        seed: int,
        conn: ConnectionInfo,
        spec: ToxicSpec,
        clock: Callable[[], float],
        sink: Callable[[FaultRecord], None],
    ) -> None:
        self.seed = seed
        self.conn = conn
        self.name = spec.name
        self.kind = spec.type
        self.direction: Direction = spec.stream
        self._clock = clock
        self._sink = sink
        #: Per-connection generator of this toxic.
        self.rng = derive_rng(seed, conn.index, spec.name)

    def stream_rng(self, stream_id: int) -> random.Random:
        """Generator for the decisions about one HTTP/2 stream of this connection."""
        return derive_rng(self.seed, self.conn.index, self.name, stream_id)

    def request_rng(self, request: str) -> random.Random:
        """Generator for the decisions about one request (see :mod:`.requests`), the
        same on whichever connection or stream id the request arrives."""
        return derive_rng(self.seed, self.name, "request", request)

    def record(
        self,
        *,
        stream_id: int = 0,
        offset: int = -1,
        detail: str = "",
        actual: int | None = None,
        request: str = "",
    ) -> None:
        """Record an injected fault."""
        self._sink(
            FaultRecord(
                time=self._clock(),
                connection=self.conn.index,
                stream_id=stream_id,
                kind=self.kind,
                toxic=self.name,
                direction=self.direction,
                offset=offset,
                detail=detail,
                actual=offset if actual is None else actual,
                request=request,
            )
        )


class Attributes(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every toxic's attributes: unknown keys are an error that names them."""


AttrsT = TypeVar("AttrsT", bound=Attributes)


class Toxic(Generic[AttrsT]):
    """One toxic acting on one direction of one connection.

    Subclasses set ``type_name`` and ``attributes_type`` and override the
    hooks they need. Hooks return the operations to run instead of the input.
    """

    type_name: ClassVar[str]
    attributes_type: ClassVar[type[Attributes]]
    #: HTTP/2 toxics must see the byte stream from its first byte (frame alignment),
    #: so they only join connections opened after they were added.
    needs_alignment: ClassVar[bool] = False
    #: Record one fault when the toxic becomes active on a connection (for toxics
    #: that act on every byte rather than at one point).
    record_on_activate: ClassVar[bool] = False
    #: Needs the connection's :class:`RequestTracker` (request-keyed HTTP/2 decisions).
    uses_requests: ClassVar[bool] = False

    def __init__(self, attrs: AttrsT, ctx: ToxicContext) -> None:
        self.attrs = attrs
        self.ctx = ctx

    def on_open(self) -> list[Op]:
        """Called once when the toxic starts acting on the connection."""
        return []

    def on_data(self, op: Data) -> list[Op]:
        return [op]

    def on_eof(self, op: Eof) -> list[Op]:
        return [op]

    def drain(self) -> list[Op]:
        """Called when the toxic is removed from a live connection: bytes it still holds."""
        return []

    def describe(self) -> str:
        """The attributes as ``k=v`` text for fault records."""
        return " ".join(f"{k}={v}" for k, v in msgspec.structs.asdict(self.attrs).items())


REGISTRY: dict[str, type[Toxic[Any]]] = {}

T = TypeVar("T", bound=type[Toxic[Any]])


def register_toxic(cls: T) -> T:
    """Class decorator: make ``cls`` available under its ``type_name``."""
    REGISTRY[cls.type_name] = cls
    return cls


def toxic_class(type_name: str) -> type[Toxic[Any]]:
    from . import toxics  # noqa: F401  (imports every toxic module once)

    try:
        return REGISTRY[type_name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise InvalidToxicError(f"unknown toxic type {type_name!r} (known: {known})") from None


def validate_spec(spec: ToxicSpec) -> Attributes:
    """Check a spec and return its typed attributes (defaults filled in)."""
    cls = toxic_class(spec.type)
    if spec.stream not in ("upstream", "downstream"):
        raise InvalidToxicError(f"toxic {spec.name!r}: stream must be upstream or downstream")
    if not 0.0 <= spec.toxicity <= 1.0:
        raise InvalidToxicError(f"toxic {spec.name!r}: toxicity must be within [0, 1]")
    try:
        return msgspec.convert(spec.attributes, cls.attributes_type, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidToxicError(f"toxic {spec.name!r} ({spec.type}): {exc}") from None


def normalized(spec: ToxicSpec) -> ToxicSpec:
    """The spec with every attribute spelled out (defaults included), as toxiproxy answers."""
    attrs = validate_spec(spec)
    return msgspec.structs.replace(spec, attributes=msgspec.to_builtins(attrs))


def build_toxic(spec: ToxicSpec, ctx: ToxicContext) -> Toxic[Any]:
    cls = toxic_class(spec.type)
    return cls(validate_spec(spec), ctx)
