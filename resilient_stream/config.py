"""``StreamConfig``: every tunable knob, with defaults that need no tuning.

Sources, highest priority first:

1. keyword arguments to :meth:`StreamConfig.load` (or the constructor),
2. ``RESILIENT_STREAM_<KNOB>`` environment variables (e.g. ``RESILIENT_STREAM_IDLE_TIMEOUT=5``),
3. a TOML file: ``resilient_stream.toml`` (top-level keys) or ``[tool.resilient_stream]``
   in ``pyproject.toml``, looked up in the working directory unless a path is given.

An unknown key or a value of the wrong type is a :class:`~resilient_stream.errors.ConfigError`
that names the key, the expected type and where the value came from. No timeout defaults to
"forever": a request that never answers fails within ``total_timeout``.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from .errors import ConfigError

ENV_PREFIX = "RESILIENT_STREAM_"


class StreamConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tuning knobs. Times are seconds, sizes bytes. See docs/configuration.md."""

    # --- timeouts (layered; none is infinite) ---
    connect_timeout: float = 10.0
    """Opening a TCP/TLS connection and the HTTP/2 handshake."""
    first_token_timeout: float = 300.0
    """Headers + first chunk of a stream. Long: loading a model can take minutes."""
    idle_timeout: float = 30.0
    """Longest gap between two chunks of one stream before it counts as stalled (the cap
    of the adaptive idle timeout)."""
    adaptive_idle_timeout: bool = True
    """Let the idle timeout follow the stream's observed pace: ``idle_timeout_factor`` x a
    decaying peak of recent gaps, within ``[idle_timeout_floor, idle_timeout]``."""
    idle_timeout_floor: float = 0.5
    """Smallest adaptive idle timeout (also absorbs event-loop lag under load)."""
    idle_timeout_factor: float = 10.0
    """How many times the recent peak gap a stream may stay silent."""
    idle_timeout_warmup: float = 5.0
    """Idle timeout while the adaptive one is still learning a stream's pace (its first
    gaps): the longer of this and ``idle_timeout_factor`` x the gaps seen so far. A stall
    early in a stream is caught within it; a slow stream raises it with its first gap."""
    total_timeout: float = 1800.0
    """Deadline for a whole stream, all attempts and resumes included."""
    pool_timeout: float = 30.0
    """Longest wait for a free stream slot when every connection is full."""
    deadline_resolution: float = 0.05
    """Seconds between checks of the streams' stall deadlines (one loop timer per
    connection, not one per stream): a stall is noticed at most this late, never early."""

    # --- transport (HTTP/2 multiplexing) ---
    http2: bool = True
    """Speak HTTP/2 with prior knowledge (h2c) to http:// origins; False uses HTTP/1.1.
    https:// origins negotiate by ALPN either way."""
    max_connections: int = 100
    """Connections per origin, opened only when the open ones are full. Servers allow
    100-128 streams per connection (hypercorn, nginx), so this caps a client at about
    100 x that many concurrent streams before requests wait ``pool_timeout``."""
    max_streams_per_connection: int = 1000
    """Client-side cap; the effective limit is min(this, the server's MAX_CONCURRENT_STREAMS)."""
    keepalive_expiry: float = 60.0
    """Close a connection that carried no stream for this long."""
    ping_interval: float = 15.0
    """Send an HTTP/2 PING after this long without a frame from the server."""
    ping_timeout: float = 10.0
    """No PING ACK within this: the connection is dead (TCP may not know yet)."""
    initial_stream_window: int = 262_144
    """HTTP/2 receive window per stream: bytes buffered for a consumer that stops reading."""
    connection_window: int = 16_777_216
    """HTTP/2 receive window for the whole connection."""
    adaptive_windows: bool = True
    """Size HTTP/2 receive windows from measurements: each stream's window follows twice
    what its consumer reads per round trip (within the floor and cap and the connection's
    BDP), new streams start from the connection's BDP. False: fixed windows as configured."""
    bdp_probe: bool = True
    """Measure round-trip time and bandwidth-delay product with PING probes on DATA (gRPC's
    BDP estimator); without it, adaptive windows only learn RTT from keepalive PINGs."""
    stream_window_floor: int = 65_536
    """Smallest adaptive stream window (a token stream stays here)."""
    stream_window_cap: int = 16_777_216
    """Largest adaptive stream window, also the BDP estimate's cap: the most one stalled
    consumer can ever hold."""
    consumer_target_latency: float = 0.25
    """Seconds of a stream's own pace that may wait unread for its consumer; a consumer that
    falls further behind gets its window cut to that (backpressure on that stream only)."""
    coalesce_reads: bool = True
    """Hand a consumer that fell behind everything waiting as one piece of bytes (several
    NDJSON lines in one read; each line is still its own chunk); False: one DATA frame
    per read."""
    read_size: int = 262_144
    """Bytes read from the socket at once."""
    verify_tls: bool = True
    """Verify server certificates for https:// origins."""

    # --- codec ---
    max_line_bytes: int = 1_048_576
    """Longest NDJSON line accepted; a longer one raises LineTooLongError (memory stays bounded)."""
    max_output_bytes: int = 67_108_864
    """Most response-body bytes one stream reads over all its attempts; past it the stream
    is stopped (upstream cancelled) with OutputLimitError. Bounds memory against a server
    that ignores ``num_predict`` and never ends. 0 disables the limit."""

    # --- retries and resume ---
    max_attempts: int = 8
    """Attempts per stream, resumes included. Transparent retries of never-processed
    streams (REFUSED_STREAM, above GOAWAY's last id) do not count."""
    resume: bool = True
    """Continue an interrupted stream by re-prompting with the partial output."""
    backoff_initial: float = 0.1
    """First retry delay (exponential, full jitter)."""
    backoff_max: float = 8.0
    """Upper bound of one retry delay."""
    retry_after_max: float = 60.0
    """Longest Retry-After/retry-after-ms honoured; longer values give up."""
    retry_budget_tokens: float = 100.0
    """Client-wide retry budget (gRPC retry throttling): an attempt that fails before its
    first chunk costs 1 token, one that delivers chunks refunds ``retry_budget_ratio``;
    retries stop while tokens <= half of this. 0 disables the budget."""
    retry_budget_ratio: float = 1.0
    """Tokens refunded per attempt that delivered chunks (1.0: retries stop when more
    attempts fail than succeed)."""
    seam_overlap: int = 16
    """Characters of delivered text held back at a resume seam (at least; the overlap
    starts at a word boundary): the server must regenerate them byte for byte before
    anything new is delivered (a verified seam). 0 disables verification."""
    max_seam_overlap: int = 256
    """Most characters held back at a seam (when no word starts earlier)."""
    on_divergence: Literal["flag", "raise"] = "flag"
    """A seam that does not verify: ``flag`` marks it (``Seam.verified`` False,
    ``StreamResult.verified`` False, a ``stream.diverged`` event) and continues from
    everything delivered; ``raise`` ends the stream with ResumeDivergedError."""

    # --- replicas ---
    replica_eject_after: int = 3
    """Consecutive failures after which a replica is ejected."""
    replica_readmit_after: float = 10.0
    """Seconds an ejected replica sits out before it is tried again."""

    # --- logging ---
    log_content: bool = False
    """Log prompts and outputs in events (off: they may hold user data)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Minimum level of the events a client emits: info = retries, resumes, give-ups and
    replica ejections; debug adds every attempt. Where they go is the application's
    structlog configuration (the library never configures logging)."""

    def __post_init__(self) -> None:
        hints = _field_types()
        for name, expected in hints.items():
            value = getattr(self, name)
            try:
                msgspec.convert(value, expected, strict=True)
            except msgspec.ValidationError:
                raise ConfigError(
                    f"config key {name!r} expects {_type_name(expected)}, got {value!r}",
                    key=name,
                ) from None
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"config key {name!r} must be >= 0, got {value!r}", key=name)
        if self.max_attempts < 1:
            raise ConfigError("config key 'max_attempts' must be >= 1", key="max_attempts")
        if self.deadline_resolution <= 0:
            raise ConfigError(
                f"config key 'deadline_resolution' must be > 0, got {self.deadline_resolution!r}",
                key="deadline_resolution",
            )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> StreamConfig:
        """Build a config from a TOML file, the environment and keyword arguments."""
        merged: dict[str, tuple[Any, str]] = {}
        for key, value in _read_toml(path).items():
            merged[key] = (value, "TOML file")
        for key, value in _read_env(os.environ if env is None else env).items():
            merged[key] = (value, f"environment variable {ENV_PREFIX}{key.upper()}")
        for key, value in overrides.items():
            merged[key] = (value, "keyword argument")
        return cls._from_sources(merged)

    @classmethod
    def _from_sources(cls, merged: dict[str, tuple[Any, str]]) -> StreamConfig:
        hints = _field_types()
        values: dict[str, Any] = {}
        for key, (value, source) in merged.items():
            if key not in hints:
                raise ConfigError(
                    f"unknown config key {key!r} (from {source}); known keys: "
                    + ", ".join(sorted(hints)),
                    key=key,
                )
            strict = not source.startswith("environment")
            try:
                values[key] = msgspec.convert(value, hints[key], strict=strict)
            except msgspec.ValidationError:
                raise ConfigError(
                    f"config key {key!r} (from {source}) expects {_type_name(hints[key])}, "
                    f"got {value!r}",
                    key=key,
                ) from None
        return cls(**values)

    def replace(self, **changes: Any) -> StreamConfig:
        """A copy with some knobs changed (validated like any other source)."""
        merged = {f: (getattr(self, f), "keyword argument") for f in self.__struct_fields__}
        merged.update({k: (v, "keyword argument") for k, v in changes.items()})
        return self._from_sources(merged)


_FIELD_TYPES: dict[str, Any] = {}


def _field_types() -> dict[str, Any]:
    if not _FIELD_TYPES:
        hints = typing.get_type_hints(StreamConfig)
        _FIELD_TYPES.update({name: hints[name] for name in StreamConfig.__struct_fields__})
    return _FIELD_TYPES


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _read_env(env: Mapping[str, str]) -> dict[str, str]:
    return {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG"
    }


def _read_toml(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read ``path``, else ``resilient_stream.toml``, else pyproject's tool table."""
    if path is None:
        explicit = os.environ.get(ENV_PREFIX + "CONFIG")
        if explicit:
            path = explicit
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        return _table_of(p)
    for candidate in (Path("resilient_stream.toml"), Path("pyproject.toml")):
        if candidate.is_file():
            table = _table_of(candidate)
            if table or candidate.name == "resilient_stream.toml":
                return table
    return {}


def _table_of(p: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    if p.name == "pyproject.toml":
        tool = data.get("tool", {})
        table = tool.get("resilient_stream", {}) if isinstance(tool, dict) else {}
        return table if isinstance(table, dict) else {}
    return data
