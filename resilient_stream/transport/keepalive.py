"""HTTP/2 PING keepalive: detect a dead peer that TCP still holds open.

A PING goes out when nothing arrived for ``interval`` seconds; no ACK within
``timeout`` calls ``on_dead``. Busy connections never ping: each tick re-arms at
``last_recv + interval``, and the connection only stores ``last_recv`` per read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class PingKeepalive:
    """Timers for one connection. ``send_ping()`` returns False if it could not send."""

    __slots__ = (
        "_deadline",
        "_loop",
        "_on_dead",
        "_send_ping",
        "_sent_at",
        "_tick",
        "interval",
        "last_recv",
        "rtt",
        "timeout",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        timeout: float,
        send_ping: Callable[[], bool],
        on_dead: Callable[[], None],
    ) -> None:
        self._loop = loop
        self.interval = interval
        self.timeout = timeout
        self._send_ping = send_ping
        self._on_dead = on_dead
        self.last_recv = loop.time()
        self._tick: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._sent_at = 0.0
        #: Round-trip time of the last ACKed keepalive PING (seconds), for window sizing.
        self.rtt: float | None = None

    def start(self) -> None:
        self.last_recv = self._loop.time()
        if self.interval > 0:
            self._tick = self._loop.call_later(self.interval, self._on_tick)

    def acked(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            self.rtt = self._loop.time() - self._sent_at

    def stop(self) -> None:
        for handle in (self._tick, self._deadline):
            if handle is not None:
                handle.cancel()
        self._tick = self._deadline = None

    def _on_tick(self) -> None:
        self._tick = None
        loop = self._loop
        interval = self.interval
        now = loop.time()
        if now - self.last_recv >= interval * 0.99 and self._deadline is None:
            if not self._send_ping():
                return
            self._sent_at = now
            self._deadline = loop.call_later(self.timeout, self._on_deadline)
            self._tick = loop.call_later(interval, self._on_tick)
        else:
            self._tick = loop.call_at(max(self.last_recv + interval, now + 0.001), self._on_tick)

    def _on_deadline(self) -> None:
        self._deadline = None
        self._on_dead()
