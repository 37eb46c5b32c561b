"""The summary of a scenario run, as a table for people and JSON for machines."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


@dataclass(slots=True)
class Progress:
    """Live counters for a progress display (updated by the runner)."""

    streams: int
    finished: int = 0
    chunks: int = 0
    faults: int = 0


class PlannedFault(msgspec.Struct, array_like=True, frozen=True):
    """One fault as the seed decided it: the request it hit ("" when the proxy did not
    know it) and its plan key."""

    request: str
    key: str


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    seed: int
    streams: int
    completed: int
    identical: int
    seams: int = 0
    """Resume seams over all streams."""
    seams_verified: int = 0
    """Seams whose continuation regenerated the held-back overlap (or that the next seam
    at the same point replaced)."""
    errors: dict[str, int]
    mismatches: list[str]
    resumes: int
    retries: int
    attempts: int
    faults: dict[str, int]
    fault_plan_digest: str
    tokens: int
    chunks: int
    wall_seconds: float
    tokens_per_second: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    client_cpu_us_per_chunk: float
    open_streams: int
    server_streams_active: int
    leaked_tasks: int
    leaked_fds: int
    over_asked: int = 0
    """Requests that asked for more tokens than were left of the budget after the text
    they carried (``asks.py``)."""
    over_ask_examples: list[str] = msgspec.field(default_factory=list)
    fault_plan: list[PlannedFault] = msgspec.field(default_factory=list)
    """Every fault by its plan key (what ``fault_plan_digest`` hashes, unsorted)."""
    requests: list[str] = msgspec.field(default_factory=list)
    """The key of every request the proxies and replicas saw: two runs with one seed
    decide the same fault for every request both made (a run that times out a slow
    stream makes one more request, which gets a draw of its own)."""

    def plan_on(self, requests: set[str]) -> list[str]:
        """The plan keys of the faults on these requests, sorted."""
        return sorted(f.key for f in self.fault_plan if f.request in requests)

    @property
    def ok(self) -> bool:
        """Every stream complete and byte-identical, every seam verified, and nothing
        leaked."""
        return (
            self.completed == self.identical == self.streams
            and self.seams_verified == self.seams
            and self.over_asked == 0
            and self.open_streams == 0
            and self.server_streams_active == 0
            and self.leaked_tasks == 0
            and self.leaked_fds == 0
        )

    def to_json(self) -> bytes:
        data = msgspec.to_builtins(self)
        data["ok"] = self.ok
        for bulky in ("fault_plan", "requests"):  # hundreds of keys: the digest stands for them
            del data[bulky]
        return msgspec.json.encode(data)

    def table(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        rows = [
            ("scenario", f"{self.scenario} (seed {self.seed})"),
            ("streams", str(self.streams)),
            ("completed", str(self.completed)),
            ("byte-identical to baseline", str(self.identical)),
            ("resumes / retries / attempts", f"{self.resumes} / {self.retries} / {self.attempts}"),
            ("seams verified", f"{self.seams_verified} / {self.seams}"),
            ("requests over budget", str(self.over_asked)),
            ("faults injected", f"{sum(self.faults.values())}: {faults}"),
            ("fault plan digest", self.fault_plan_digest),
            (
                "tokens",
                f"{self.tokens} in {self.wall_seconds:.2f}s ({self.tokens_per_second:.0f}/s)",
            ),
            (
                "time to first token p50 / p99",
                f"{self.ttft_p50_ms:.1f} / {self.ttft_p99_ms:.1f} ms",
            ),
            ("client CPU per chunk", f"{self.client_cpu_us_per_chunk:.1f} us"),
            (
                "leaks (streams/server/tasks/fds)",
                f"{self.open_streams}/{self.server_streams_active}/{self.leaked_tasks}/"
                f"{self.leaked_fds}",
            ),
            ("verdict", "OK" if self.ok else "FAILED"),
        ]
        if self.errors:
            rows.insert(4, ("errors", ", ".join(f"{k}={v}" for k, v in self.errors.items())))
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines += [f"  ! {m}" for m in self.mismatches + self.over_ask_examples]
        return "\n".join(lines)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]
