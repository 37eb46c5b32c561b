"""``AsyncClient``: ollama-python's async client, backed by :class:`StreamClient`.

Same constructor, same ``generate()``/``chat()`` signatures and return shapes,
but every stream is resumable: a connection drop, reset, stall or server
crash mid-answer is retried or resumed by re-prompting, and the caller sees
one complete answer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from .. import __version__
from ..client import StreamClient
from ..config import ENV_PREFIX, StreamConfig, _read_toml
from ..formats.ollama.types import ChatChunk, Logprob, ToolCall
from ..result import StreamResult
from ..stream import ResilientStream
from . import _request
from ._responses import RequestError, ResponseFactory, map_error, raise_mapped


class ResponseStream:
    """What ``await client.chat(..., stream=True)`` returns: an async iterator of responses.

    Extras over ollama's plain async generator: ``aclose()``, ``async with``, and
    ``result`` (text, resumes, seams...) once the stream ended.
    """

    def __init__(self, stream: ResilientStream[Any], convert: Callable[[Any], Any]) -> None:
        self._stream = stream
        self._convert = convert

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except (StopAsyncIteration, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise_mapped(exc)
        return self._convert(chunk)

    async def aclose(self) -> None:
        """Stop early: cancels the upstream request."""
        await self._stream.aclose()

    async def __aenter__(self) -> ResponseStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def result(self) -> StreamResult:
        return self._stream.result

    @property
    def stream(self) -> ResilientStream[Any]:
        return self._stream


class AsyncClient:
    """Drop-in for ``ollama.AsyncClient``: ``from resilient_stream.ollama import AsyncClient``.

    ``host`` is parsed like ollama-python (default ``$OLLAMA_HOST`` or
    ``http://127.0.0.1:11434``); a list of hosts means replicas of one model.
    ``config`` defaults to :meth:`StreamConfig.load` (TOML + ``RESILIENT_STREAM_*``
    environment) with ``log_level="warning"`` unless set there: ollama-python logs
    nothing, so a swapped import should not start printing resume events.
    ``timeout`` (a number or ``httpx.Timeout``) sets the connect, first-token,
    idle and pool timeouts like httpx's would; ``verify`` maps to
    ``verify_tls``. Other methods (``list``, ``show``, ``embed``, ``pull``...) are
    forwarded to a real ``ollama.AsyncClient`` when the package is installed.
    """

    def __init__(
        self,
        host: str | Sequence[str] | None = None,
        *,
        config: StreamConfig | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Any = None,
        follow_redirects: bool = True,
        verify: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(
                "resilient_stream.ollama.AsyncClient does not support "
                + ", ".join(sorted(kwargs))
                + " (supported: host, config, headers, timeout, follow_redirects, verify, "
                "transport)"
            )
        del follow_redirects  # model servers do not redirect streams; accepted for parity
        hosts = [host] if host is None or isinstance(host, str) else list(host)
        self.hosts = [_request.parse_host(h) for h in hosts]
        cfg = config if config is not None else default_config()
        overrides = _timeout_overrides(timeout)
        if verify is not None:
            overrides["verify_tls"] = verify
        if overrides:
            cfg = cfg.replace(**overrides)
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        hdrs.setdefault("user-agent", f"resilient-stream/{__version__} (ollama drop-in)")
        api_key = os.environ.get("OLLAMA_API_KEY")
        if api_key and "authorization" not in hdrs:
            hdrs["authorization"] = f"Bearer {api_key}"
        self._headers = hdrs
        self._client = StreamClient(
            self.hosts[0] if len(self.hosts) == 1 else self.hosts,
            config=cfg,
            transport=transport,
            headers=hdrs,
        )
        self._factory = ResponseFactory()
        self._fallback: Any = None

    @property
    def stream_client(self) -> StreamClient:
        """The shared :class:`StreamClient` behind this client."""
        return self._client

    # --- generate ------------------------------------------------------------------

    async def generate(
        self,
        model: str = "",
        prompt: str | None = None,
        suffix: str | None = None,
        *,
        system: str | None = None,
        template: str | None = None,
        context: Sequence[int] | None = None,
        stream: bool = False,
        think: bool | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        raw: bool | None = None,
        format: Any = None,
        images: Sequence[Any] | None = None,
        options: Any = None,
        keep_alive: float | str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
    ) -> Any:
        """Like ``ollama.AsyncClient.generate``: one ``GenerateResponse`` with the whole
        text, or (``stream=True``) an async iterator of ``GenerateResponse`` parts."""
        if width is not None or height is not None or steps is not None:
            raise RequestError("image generation (width/height/steps) is not supported")
        fields = _drop_none(
            suffix=suffix,
            system=system,
            template=template,
            context=list(context) if context is not None else None,
            think=think,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            raw=raw,
            format=_request.plain_format(format),
            images=[_request.encode_image(i) for i in images] if images else None,
            options=_request.plain_options(options),
            keep_alive=keep_alive,
        )
        try:
            s = self._client.generate(model=model, prompt=prompt or "", **fields)
        except Exception as exc:
            raise_mapped(exc)
        if stream:
            return ResponseStream(s, self._factory.generate)
        last, _, lps = await _drain(s)
        result = s.result
        return self._factory.generate_final(last, result.text, result.thinking, lps)

    # --- chat --------------------------------------------------------------------------

    async def chat(
        self,
        model: str = "",
        messages: Sequence[Any] | None = None,
        *,
        tools: Sequence[Any] | None = None,
        stream: bool = False,
        think: bool | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        format: Any = None,
        options: Any = None,
        keep_alive: float | str | None = None,
    ) -> Any:
        """Like ``ollama.AsyncClient.chat``: one ``ChatResponse`` with the whole message,
        or (``stream=True``) an async iterator of ``ChatResponse`` parts."""
        fields = _drop_none(
            tools=_request.copy_tools(tools),
            think=think,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            format=_request.plain_format(format),
            options=_request.plain_options(options),
            keep_alive=keep_alive,
        )
        try:
            s = self._client.chat(model=model, messages=_request.copy_messages(messages), **fields)
        except Exception as exc:
            raise_mapped(exc)
        if stream:
            return ResponseStream(s, self._factory.chat)
        last, calls, lps = await _drain(s)
        result = s.result
        return self._factory.chat_final(last, result.text, result.thinking, calls, lps)

    # --- everything else -----------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """Forward ``list``/``show``/``embed``/``pull``/... to ollama's own client."""
        if name.startswith("_"):
            raise AttributeError(name)
        if self._fallback is None:
            try:
                import ollama
            except ImportError:
                raise AttributeError(
                    f"AsyncClient.{name} needs the `ollama` package (only generate and chat "
                    "are implemented by resilient_stream)"
                ) from None
            self._fallback = ollama.AsyncClient(self.hosts[0], headers=self._headers)
        return getattr(self._fallback, name)

    async def close(self) -> None:
        """Cancel open streams and close all connections."""
        await self._client.aclose()
        fallback, self._fallback = self._fallback, None
        if fallback is not None:
            await fallback.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _drain(
    s: ResilientStream[Any],
) -> tuple[Any, list[ToolCall], list[Logprob]]:
    """Consume a whole stream for ``stream=False``; keep what the final response needs."""
    last: Any = None
    calls: list[ToolCall] = []
    lps: list[Logprob] = []
    try:
        async with s:
            async for chunk in s:
                last = chunk
                if chunk.logprobs:
                    lps.extend(chunk.logprobs)
                if isinstance(chunk, ChatChunk) and chunk.message.tool_calls:
                    calls.extend(chunk.message.tool_calls)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise_mapped(exc)
    if last is None:
        raise map_error(_empty_stream())
    return last, calls, lps


def _empty_stream() -> Exception:
    from ..errors import ProtocolError

    return ProtocolError("the server sent no response chunks")


def default_config() -> StreamConfig:
    """``StreamConfig.load()``, but quiet (``warning``) unless the log level was chosen
    in the environment or the TOML file."""
    cfg = StreamConfig.load()
    chosen = f"{ENV_PREFIX}LOG_LEVEL" in os.environ or "log_level" in _read_toml(None)
    return cfg if chosen else cfg.replace(log_level="warning")


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _timeout_overrides(timeout: Any) -> dict[str, float]:
    """An httpx-style timeout -> StreamConfig knobs (None keeps the config's own)."""
    if timeout is None:
        return {}
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        t = float(timeout)
        return {
            "connect_timeout": t,
            "first_token_timeout": t,
            "idle_timeout": t,
            "pool_timeout": t,
        }
    if isinstance(timeout, httpx.Timeout):
        out: dict[str, float] = {}
        if timeout.connect is not None:
            out["connect_timeout"] = timeout.connect
        if timeout.read is not None:
            out["first_token_timeout"] = timeout.read
            out["idle_timeout"] = timeout.read
        if timeout.pool is not None:
            out["pool_timeout"] = timeout.pool
        return out
    raise TypeError(f"timeout must be a number, httpx.Timeout or None, got {timeout!r}")


__all__ = ["AsyncClient", "ResponseStream"]
