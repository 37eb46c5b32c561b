"""``StreamClient``: one shared client, many concurrent resilient streams.

    async with StreamClient("http://127.0.0.1:11434") as client:
        async for chunk in client.generate(model="m", prompt="hi"):
            print(chunk.response, end="")

One client is meant to be shared by a whole service: it owns the connection
pool (the HTTP/2 multiplexed transport by default), the replica health and
the retry budgets (one per replica, shared by all streams).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from .config import StreamConfig
from .context import StreamContext
from .errors import ConfigError, InvalidRequestError
from .formats.anthropic.planner import AnthropicPlanner
from .formats.anthropic.types import MessageChunk, MessagesRequest
from .formats.ollama.planner import ResumePlanner
from .formats.ollama.types import ChatChunk, ChatRequest, GenerateChunk, GenerateRequest, Message
from .formats.plan import Planner
from .logging import library_logger
from .replicas import ReplicaSet
from .stream import ResilientStream
from .transport import MultiplexedTransport

DEFAULT_URL = "http://127.0.0.1:11434"

ChunkT = TypeVar("ChunkT")


class StreamClient:
    """Resilient ``generate``/``chat`` streams against Ollama-compatible servers.

    ``url`` may be a list: the replicas of one model server. A failed attempt
    moves to the next healthy replica, and a resume may continue on another.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        config: StreamConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config if config is not None else StreamConfig.load()
        urls = [url] if isinstance(url, str) else list(url)
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ConfigError(f"base URL must start with http:// or https://, got {u!r}")
        self.replicas = ReplicaSet(
            urls,
            eject_after=self.config.replica_eject_after,
            readmit_after=self.config.replica_readmit_after,
            budget_tokens=self.config.retry_budget_tokens,
            budget_ratio=self.config.retry_budget_ratio,
        )
        if transport is None:
            transport = MultiplexedTransport(self.config)
        timeout = httpx.Timeout(
            connect=self.config.connect_timeout,
            read=None,  # stalls are detected per stream by ResilientStream
            write=self.config.idle_timeout,
            pool=self.config.pool_timeout,
        )
        self.http = httpx.AsyncClient(transport=transport, headers=headers, timeout=timeout)
        self._ctx = StreamContext(
            config=self.config,
            http=self.http,
            replicas=self.replicas,
            log=library_logger(self.config.log_level),
            rng=random.Random(seed),
            timeout=timeout,
            transport=transport,
        )
        self._ids = itertools.count(1)

    # --- streams -------------------------------------------------------------------

    def generate(
        self, *, model: str, prompt: str = "", **fields: Any
    ) -> ResilientStream[GenerateChunk]:
        """Stream ``/api/generate``. Takes Ollama's request fields (``system``,
        ``raw``, ``options``, ``format``, ``think``, ``images``, ``keep_alive``...)."""
        request = _build(GenerateRequest, dict(fields, model=model, prompt=prompt))
        _require_streaming(request.stream)
        return self.open_stream(ResumePlanner(request), GenerateChunk)

    def chat(
        self,
        *,
        model: str,
        messages: Sequence[Message | Mapping[str, Any]],
        **fields: Any,
    ) -> ResilientStream[ChatChunk]:
        """Stream ``/api/chat``. Takes Ollama's request fields (``tools``,
        ``options``, ``format``, ``think``, ``keep_alive``...)."""
        msgs = [m if isinstance(m, Message) else _build(Message, dict(m)) for m in messages]
        request = _build(ChatRequest, dict(fields, model=model, messages=msgs))
        _require_streaming(request.stream)
        return self.open_stream(ResumePlanner(request), ChatChunk)

    def messages(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        **fields: Any,
    ) -> ResilientStream[MessageChunk]:
        """Stream Anthropic's ``/v1/messages`` (``system``, ``stop_sequences``,
        ``temperature``... as the API names them): chunks are
        :class:`~resilient_stream.formats.anthropic.types.MessageChunk` (one per delta,
        the events before it in ``before``); docs/sdk/anthropic.md says what resumes."""
        body = dict(fields, model=model, messages=list(messages), max_tokens=max_tokens)
        request = _build(MessagesRequest, body)
        _require_streaming(request.stream)
        return self.open_stream(AnthropicPlanner(request), MessageChunk)

    def open_stream(self, planner: Planner, caller_type: type[ChunkT]) -> ResilientStream[ChunkT]:
        """A resilient stream for any wire format: ``planner`` builds each attempt's
        request, ``caller_type`` is the chunk type the caller iterates (it needs an
        entry in ``formats.CHUNK_ADAPTERS``; the plans' framing one in ``formats.FRAMINGS``)."""
        stream = ResilientStream(self._ctx, planner, caller_type, next(self._ids))
        self._ctx.streams.add(stream)
        return stream

    @property
    def open_streams(self) -> int:
        return len(self._ctx.streams)

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel every open stream and close all connections."""
        for stream in list(self._ctx.streams):
            await stream.aclose()
        await self._ctx.drain()
        await self.http.aclose()


def _require_streaming(stream: bool) -> None:
    if stream is False:
        raise InvalidRequestError(
            "StreamClient always streams (stream=False is not supported); "
            "use `await client.generate(...).collect()` for the whole answer"
        )


def _build(tp: type[Any], fields: dict[str, Any]) -> Any:
    try:
        return msgspec.convert(fields, tp, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"invalid {tp.__name__}: {exc}") from None
