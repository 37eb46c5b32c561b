"""Chaos scenarios as data: a TOML file names the toxics, the server-side faults,
the seed and the traffic; nothing about a scenario lives in code.

The suite's own scenarios ship with the package (``scenarios/*.toml``, package
data, read through :mod:`importlib.resources`), so ``resilient-stream chaos``
runs them from an installed wheel as from a checkout.
"""

from __future__ import annotations

import tomllib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import msgspec

from ..chaos import ToxicSpec
from ..errors import ConfigError

EndpointName = Literal[
    "generate_raw", "generate", "chat", "chat_think", "openai_chat", "openai_completion"
]


class ServerFaults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Seeded server-side faults (what a proxy cannot fake: 429/503 answers, error lines).

    Each request is hit with ``probability``; the draw is keyed by the request's
    body and how many times that same body arrived before (retries), never by
    arrival order or time, so every run with the same seed gets the same plan.
    """

    probability: float = 0.0
    kind: str = "status"
    status: int = 503
    retry_after: float | None = None
    after_tokens_max: int = 0
    message: str = "injected by the chaos suite"


class ReplicaDeath(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Stop one replica (server and its proxy) once it has received ``after_requests``
    requests or generated ``after_tokens`` tokens (whichever is set and comes first)."""

    replica: int = 0
    after_requests: int = 0
    after_tokens: int = 0


class Scenario(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    seed: int = 7
    streams: int = 100
    num_predict: int = 60
    #: Server pacing per stream (0: as fast as possible).
    tokens_per_second: float = 0.0
    endpoints: list[EndpointName] = msgspec.field(
        default_factory=lambda: ["generate_raw", "generate", "chat", "chat_think"]
    )
    replicas: int = 1
    max_concurrent_streams: int = 100
    #: The reference server's running token counts on every chunk (its default, an
    #: extension). False: counts only at the end, as Ollama (``eval_count``) and OpenAI
    #: (``usage``) send them, so a resume bounds what it carries (``resume/accounting.py``).
    report_tokens: bool = True
    toxics: list[ToxicSpec] = msgspec.field(default_factory=list)
    server_faults: ServerFaults | None = None
    replica_death: ReplicaDeath | None = None
    #: StreamConfig overrides for the client under test.
    client: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Soak scenarios run only from the CLI or with ``-m soak``.
    soak: bool = False
    #: Whole-run time limit (seconds); the runner fails the scenario past it.
    time_limit: float = 170.0


def load_scenario(path: str | Path | Traversable) -> Scenario:
    p = Path(path) if isinstance(path, str) else path
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read scenario {str(p)!r}: {exc}") from None
    data.setdefault("name", p.name.removesuffix(".toml"))
    try:
        return msgspec.convert(data, Scenario)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"scenario {str(p)!r}: {exc}") from None


def bundled_scenario_files() -> list[Traversable]:
    """The suite's own scenarios, shipped with the package."""
    folder = files("resilient_stream.chaos_suite") / "scenarios"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)


def scenario_files(directory: str | Path | None = None) -> list[Traversable]:
    """The ``*.toml`` files of ``directory``, or the bundled scenarios (None)."""
    if directory is None:
        return bundled_scenario_files()
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"scenario directory {str(d)!r} not found")
    return [f for f in sorted(d.glob("*.toml"))]
