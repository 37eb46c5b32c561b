"""What a stream needs from the client that made it, and nothing more.

``StreamClient`` owns the shared parts (the HTTP client and its pool, the
replicas and their retry budgets, the logger, the RNG, the decoders); each
``ResilientStream`` gets this narrow context instead of the whole client, so
the stream depends on five things, not on the client's other members, and
no import ties the two together both ways.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from .config import StreamConfig
from .formats import Decoder, framing
from .formats.plan import AttemptPlan
from .logging import EventLogger
from .replicas import ReplicaSet


@dataclass(eq=False)
class StreamContext:
    config: StreamConfig
    http: httpx.AsyncClient
    replicas: ReplicaSet
    log: EventLogger
    rng: random.Random
    #: The timeouts every attempt's request carries (the stream watches stalls itself).
    timeout: httpx.Timeout
    #: The client's transport, for requests sent without ``AsyncClient.send`` (attempt.py;
    #: None: always through ``send``).
    transport: httpx.AsyncBaseTransport | None = None
    #: Open streams, for ``StreamClient.aclose()`` and ``open_streams``.
    streams: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    #: Request prototypes by URL (attempt.py).
    prototypes: dict[str, Any] = field(default_factory=dict)
    _decoders: dict[tuple[str, type[Any]], Decoder] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def decoder_for(self, plan: AttemptPlan) -> Decoder:
        """The (stateless, shared) decoder of a plan's framing and chunk type."""
        key = (plan.framing, plan.chunk_type)
        decoder = self._decoders.get(key)
        if decoder is None:
            decoder = self._decoders[key] = framing(plan.framing).new_decoder(plan.chunk_type)
        return decoder

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a cleanup coroutine in the background (kept referenced until done)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the background cleanups (at client close)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
