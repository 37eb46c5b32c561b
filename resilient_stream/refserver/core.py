"""State shared by every connection of one reference server (the edges' context)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from resilient_stream.refserver.handler import Handler
from resilient_stream.refserver.settings import ServerSettings, ServerStats
from resilient_stream.refserver.streaming import Pacing, Scheduler


class Closable(Protocol):
    def abort(self) -> None: ...


class ServerCore:
    """Settings, counters, the request handler, the scheduler and the open connections."""

    def __init__(self, settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.stats = ServerStats()
        self.handler = Handler(settings, self.stats)
        self.sched = Scheduler(loop)
        self.pacing = Pacing(settings)
        self.loop = loop
        self.connections: set[Closable] = set()
        #: Connections whose protocol is not known yet (not counted in the stats).
        self.sniffing: set[Closable] = set()

    def connection_opened(self, conn: Closable) -> None:
        self.connections.add(conn)
        self.stats.connections_opened += 1
        self.stats.connections_open += 1

    def connection_closed(self, conn: Closable) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.stats.connections_open -= 1
