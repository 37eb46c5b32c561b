"""ChaosProxy: the asyncio TCP proxy with toxics, seeded and replayable.

    async with ChaosProxy(upstream="127.0.0.1:8000", toxics=["latency:latency=50"], seed=7) as p:
        httpx.get(p.url)
        p.faults   # every injected fault

Connections are numbered in accept order; every random decision comes from
a generator derived from (seed, connection index, toxic name[, stream id]),
so the same seed and the same traffic give the same fault plan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .connection import BACKLOG_HIGH, ProxyConnection
from .core import ConnectionCore
from .fault_log import FaultLog, FaultRecord
from .request_tracker import RequestCounts
from .spec import to_spec
from .toxic import ChaosError, InvalidToxicError, ToxicSpec, toxic_class

ToxicLike = ToxicSpec | str | Mapping[str, Any]


class ProxyInfo(msgspec.Struct):
    """A proxy in toxiproxy's JSON shape."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: list[ToxicSpec]


def split_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"host:port"``, ``":port"`` or ``"[::1]:port"`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or default_host
    try:
        return host, int(port)
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None


class ToxicExistsError(ChaosError):
    """A toxic with this name is already on the proxy."""


class ToxicNotFoundError(ChaosError, KeyError):
    """No toxic with this name on the proxy."""


class ChaosProxy:
    """A TCP proxy between clients and one upstream that injects seeded faults."""

    def __init__(
        self,
        upstream: str,
        toxics: Iterable[ToxicLike] = (),
        *,
        seed: int = 0,
        listen: str = "127.0.0.1:0",
        name: str = "chaos",
        enabled: bool = True,
        max_fault_records: int = 100_000,
        requests: RequestCounts | None = None,
        max_backlog: int = BACKLOG_HIGH,
    ) -> None:
        self.name = name
        #: Bytes a direction may hold back (latency/bandwidth toxics) before the proxy
        #: stops reading from the sender: bounds memory, and caps what a latency
        #: toxic of L seconds carries at max_backlog / L bytes/s.
        self.max_backlog = max_backlog
        self.upstream = upstream
        self._upstream_addr = split_hostport(upstream)
        self._listen_addr = split_hostport(listen)
        self.seed = seed
        #: How often each request body was seen (pass one shared object to proxies in
        #: front of replicas, with the same seed, so a request's fate does not depend
        #: on the replica it lands on).
        self.requests = RequestCounts() if requests is None else requests
        self.enabled = enabled
        self._log = FaultLog(max_fault_records)
        self._server: asyncio.Server | None = None
        self._conns: set[ProxyConnection] = set()
        self._next_index = 0
        self._bound: tuple[str, int] | None = None
        self._toxics: list[ToxicSpec] = []
        for t in toxics:
            self.add_toxic(t)

    # --- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start listening (if enabled)."""
        if self.enabled and self._server is None:
            await self._listen()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self._bound or self._listen_addr
        self._server = await loop.create_server(self._accept, host, port)
        sockname = self._server.sockets[0].getsockname()
        self._bound = (sockname[0], sockname[1])

    def _accept(self) -> asyncio.Protocol:
        index = self._next_index
        self._next_index += 1
        core = ConnectionCore(
            index=index,
            seed=self.seed,
            specs=list(self._toxics),
            clock=time.time,
            sink=self._log.append,
            requests=self.requests,
        )
        conn = ProxyConnection(
            core, self._upstream_addr, self._conns.discard, max_backlog=self.max_backlog
        )
        self._conns.add(conn)
        return conn.client_protocol()

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        await self._close_server()

    async def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            conn.abort()
        if server is not None:
            await server.wait_closed()
        # Let transports run their connection_lost callbacks.
        for _ in range(3):
            if not self._conns:
                break
            await asyncio.sleep(0)

    async def disable(self) -> None:
        """Like toxiproxy: stop listening and drop all connections; the address is kept."""
        self.enabled = False
        await self._close_server()

    async def enable(self) -> None:
        self.enabled = True
        if self._server is None:
            await self._listen()

    # --- addresses ------------------------------------------------------------

    async def move(self, host: str, port: int) -> None:
        """Listen on another address (toxiproxy's POST with a new ``listen``): stop,
        drop every connection, and listen again there if enabled (port 0: a new free
        port). The caller checks the address is loopback, as for the constructor's."""
        await self._close_server()
        self._listen_addr = (host, port)
        self._bound = None
        if self.enabled:
            await self._listen()

    def set_upstream(self, upstream: str) -> None:
        """Point new connections at another upstream (open ones keep theirs)."""
        self._upstream_addr = split_hostport(upstream)
        self.upstream = upstream

    @property
    def host(self) -> str:
        return (self._bound or self._listen_addr)[0]

    @property
    def port(self) -> int:
        return (self._bound or self._listen_addr)[1]

    @property
    def listen(self) -> str:
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the proxy's listening socket."""
        return f"http://{self.listen}"

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    @property
    def connections_accepted(self) -> int:
        return self._next_index

    # --- toxics -----------------------------------------------------------------

    @property
    def toxics(self) -> list[ToxicSpec]:
        return list(self._toxics)

    def get_toxic(self, name: str) -> ToxicSpec:
        for t in self._toxics:
            if t.name == name:
                return t
        raise ToxicNotFoundError(f"toxic {name!r} not found on proxy {self.name!r}")

    def add_toxic(
        self,
        toxic: ToxicLike,
        *,
        name: str | None = None,
        stream: str | None = None,
        toxicity: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> ToxicSpec:
        """Add a toxic (spec, compact text, or toxiproxy mapping); keywords override it.

        TCP toxics also start acting on open connections, HTTP/2 toxics only on
        connections opened from now on (they must see a connection from its
        first byte to find frame boundaries).
        """
        spec = to_spec(toxic)
        changes: dict[str, Any] = {}
        if stream is not None:
            changes["stream"] = stream
        if toxicity is not None:
            changes["toxicity"] = toxicity
        if attributes is not None:
            changes["attributes"] = {**spec.attributes, **attributes}
        if name is not None:
            changes["name"] = name
        elif "stream" in changes and spec.name == f"{spec.type}_{spec.stream}":
            changes["name"] = f"{spec.type}_{changes['stream']}"
        if changes:
            spec = to_spec(msgspec.structs.replace(spec, **changes))
        if any(t.name == spec.name for t in self._toxics):
            raise ToxicExistsError(f"toxic {spec.name!r} already exists on proxy {self.name!r}")
        self._toxics.append(spec)
        for conn in list(self._conns):
            conn.add_toxic(spec)
        return spec

    def update_toxic(
        self,
        name: str,
        *,
        toxicity: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> ToxicSpec:
        """Change a toxic's toxicity/attributes, on open connections too.

        New attributes are swapped into the live toxics in place (state such as
        bytes counted so far is kept). A new toxicity is rolled again on open
        connections for TCP toxics; HTTP/2 toxics take it on new connections.
        """
        old = self.get_toxic(name)
        new = to_spec(
            msgspec.structs.replace(
                old,
                toxicity=old.toxicity if toxicity is None else toxicity,
                attributes={**old.attributes, **(attributes or {})},
            )
        )
        self._toxics[self._toxics.index(old)] = new
        for conn in list(self._conns):
            if new.toxicity == old.toxicity or toxic_class(new.type).needs_alignment:
                conn.core.update_toxic(new)
            else:
                at = conn.remove_toxic(name)
                conn.add_toxic(new, at)
        return new

    def remove_toxic(self, name: str) -> None:
        spec = self.get_toxic(name)
        self._toxics.remove(spec)
        for conn in list(self._conns):
            conn.remove_toxic(name)

    def reset(self) -> None:
        """Remove every toxic (toxiproxy's /reset also re-enables; see :meth:`enable`)."""
        for spec in list(self._toxics):
            self.remove_toxic(spec.name)

    # --- faults -----------------------------------------------------------------

    @property
    def faults(self) -> list[FaultRecord]:
        """Every fault injected so far, in order."""
        return list(self._log.records)

    def fault_plan(self) -> list[tuple[str, str, str, str, int, str]]:
        """The faults without their times, sorted: equal plans mean a faithful replay."""
        return sorted(r.plan_key() for r in self._log.records)

    def clear_faults(self) -> None:
        self._log.clear()

    def info(self) -> ProxyInfo:
        return ProxyInfo(
            name=self.name,
            listen=self.listen,
            upstream=self.upstream,
            enabled=self.enabled,
            toxics=self.toxics,
        )


__all__ = [
    "ChaosProxy",
    "InvalidToxicError",
    "ProxyInfo",
    "ToxicExistsError",
    "ToxicNotFoundError",
    "split_hostport",
]
