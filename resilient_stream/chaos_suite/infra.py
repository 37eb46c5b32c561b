"""The infrastructure a scenario runs against: reference servers and chaos proxies
on their own event loop in a background thread.

Keeping them off the client's thread lets the runner measure the client's CPU
alone (``time.thread_time`` in the client thread) and makes the servers behave
like the separate processes they are in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec

from ..chaos import ChaosProxy, FaultRecord
from ..chaos.request_tracker import RequestCounts
from ..refserver import Fault, ReferenceServer, RequestInfo
from .scenario import Scenario

T = TypeVar("T")


class ServerFaultPlan:
    """Seeded server-side faults: the draw for a request is keyed by (seed, path, body)."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        replica: int,
        records: list[FaultRecord],
        seen: RequestCounts,
        requests: list[tuple[str, dict[str, Any]]],
    ):
        self.cfg = scenario.server_faults
        self.requests = requests
        self.seen = seen
        self.seed = seed
        self.replica = replica
        self.records = records
        self.death_after = (
            scenario.replica_death.after_requests
            if scenario.replica_death is not None
            and scenario.replica_death.replica == replica
            and scenario.replica_death.after_requests > 0
            else None
        )
        self.on_death: Any = None

    def __call__(self, info: RequestInfo) -> Fault | None:
        self.requests.append((info.path, info.body))
        death_due = self.death_after is not None and info.index + 1 >= self.death_after
        if death_due and self.on_death is not None:
            self.on_death()
            self.on_death = None
        cfg = self.cfg
        if cfg is None or cfg.probability <= 0:
            return None
        # Keyed by what was asked, not by arrival order: the same request gets the same
        # fate in every run with this seed, whatever the timing.
        # The n-th time the same request arrives (a retry) gets a draw of its own.
        body_key = hashlib.sha256(msgspec.json.encode(info.body)).hexdigest()[:16]
        n = self.seen.occurrence(body_key)
        key = f"{body_key}#{n}"
        rng = random.Random(f"{self.seed}:server:{info.path}:{key}")
        if rng.random() >= cfg.probability:
            return None
        after = rng.randint(0, cfg.after_tokens_max) if cfg.after_tokens_max else 0
        kind = f"server_{cfg.kind}" + (f"_{cfg.status}" if cfg.kind == "status" else "")
        self.records.append(
            FaultRecord(
                time=0.0,
                connection=-1,
                stream_id=-1,
                kind=kind,
                toxic="server",
                direction="downstream",
                offset=after,
                detail=f"request={key}",
                request=f"server:{key}",
            )
        )
        return Fault(
            cfg.kind,  # type: ignore[arg-type]
            after_tokens=after,
            status=cfg.status,
            retry_after=cfg.retry_after,
            message=cfg.message,
        )


class Infra:
    """Servers + proxies for one scenario run, on a private loop thread."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chaos-infra", daemon=True
        )
        self.servers: list[ReferenceServer] = []
        self.proxies: list[ChaosProxy] = []
        self.baseline: ReferenceServer | None = None
        self.server_faults: list[FaultRecord] = []
        self._seen = RequestCounts()  # the replicas' requests (the proxies': _requests)
        #: (path, body) of every request a replica received, for the budget check.
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._requests = RequestCounts()
        self.dead: set[int] = set()
        self._watcher: asyncio.Task[None] | None = None

    # --- running coroutines on the infra loop -------------------------------------

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def start(self) -> tuple[str, list[str]]:
        """Start everything; returns (baseline URL, proxy URLs)."""
        self._thread.start()
        return await self.call(self._start())

    async def stop(self) -> None:
        try:
            await self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self._thread.join, 10)
            self.loop.close()

    # --- on the infra loop ---------------------------------------------------------

    async def _start(self) -> tuple[str, list[str]]:
        sc = self.scenario
        self.baseline = ReferenceServer(stop_probability=0.0)
        await self.baseline.__aenter__()
        for i in range(sc.replicas):
            plan = ServerFaultPlan(sc, self.seed, i, self.server_faults, self._seen, self.requests)
            server = ReferenceServer(
                stop_probability=0.0,
                tokens_per_second=sc.tokens_per_second,
                max_concurrent_streams=sc.max_concurrent_streams,
                report_tokens=sc.report_tokens,
                faults=plan,
                seed=self.seed + i,
            )
            await server.__aenter__()
            # One seed and one request count for every replica's proxy: a request's
            # fate must not depend on the replica it lands on (that follows timing).
            proxy = ChaosProxy(
                upstream=f"127.0.0.1:{server.port}",
                toxics=sc.toxics,
                seed=self.seed * 1000,
                name=f"replica{i}",
                requests=self._requests,
            )
            await proxy.__aenter__()
            plan.on_death = lambda i=i: self.loop.create_task(self._kill(i))
            self.servers.append(server)
            self.proxies.append(proxy)
        death = sc.replica_death
        if death is not None and death.after_tokens > 0:
            self._watcher = self.loop.create_task(
                self._watch_tokens(death.replica, death.after_tokens)
            )
        return self.baseline.url, [p.url for p in self.proxies]

    async def _watch_tokens(self, i: int, tokens: int) -> None:
        """Kill replica ``i`` once it has generated ``tokens`` tokens (mid-stream death)."""
        server = self.servers[i]
        while server.stats.tokens_generated < tokens:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.005)
        await self._kill(i)

    async def _kill(self, i: int) -> None:
        if i in self.dead:
            return
        self.dead.add(i)
        self.server_faults.append(
            FaultRecord(
                time=0.0,
                connection=-1,
                stream_id=-1,
                kind="replica_died",
                toxic="server",
                direction="downstream",
                detail=f"replica={i}",
            )
        )
        await self.proxies[i].__aexit__(None, None, None)
        await self.servers[i].__aexit__(None, None, None)

    async def _stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for i in range(len(self.servers)):
            if i not in self.dead:
                self.dead.add(i)
                await self.proxies[i].__aexit__(None, None, None)
                await self.servers[i].__aexit__(None, None, None)
        if self.baseline is not None:
            await self.baseline.__aexit__(None, None, None)

    # --- reading results (from the client thread) ------------------------------------

    def faults(self) -> list[FaultRecord]:
        out = list(self.server_faults)
        for proxy in self.proxies:
            out += proxy.faults
        return out

    def request_keys(self) -> list[str]:
        """Every request the proxies and the replicas saw, by the keys their fault draws
        use (a retry of the same body is another key)."""
        server = [f"server:{key}" for key in self._seen.seen()]
        return sorted(self._requests.seen() + server)

    def streams_active(self) -> int:
        return sum(s.stats.streams_active for i, s in enumerate(self.servers) if i not in self.dead)
