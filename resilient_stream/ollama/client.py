"""The official ``ollama`` client classes with :class:`ResilientTransport` underneath.

``AsyncClient`` *is* an ``ollama.AsyncClient`` (a subclass that only changes the
constructor), so its methods, request bodies, response types and errors are the
official ones; the resume happens below it, in the httpx transport.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
import ollama

from ..config import ENV_PREFIX, StreamConfig, _read_toml
from ..result import StreamResult
from ..sdk import ResilientSyncTransport, ResilientTransport


class AsyncClient(ollama.AsyncClient):
    """``ollama.AsyncClient`` whose streams resume: ``from resilient_stream.ollama import
    AsyncClient`` instead of ``from ollama import AsyncClient``.

    Takes ollama's arguments (``host``, ``headers``, ``timeout``, ``follow_redirects``
    and the other ``httpx.AsyncClient`` keywords), plus ``config``: the
    :class:`~resilient_stream.StreamConfig` of the resumed streams (default:
    :func:`default_config`), ``transport``: what the requests go over (default: a
    ``MultiplexedTransport``), wrapped in the :class:`ResilientTransport`, and
    ``upgrade_non_streaming``: stream ``stream=False`` calls underneath so they resume
    too (default: off, or ``$RESILIENT_OLLAMA_UPGRADE_NON_STREAMING=1``; off, the
    request goes out exactly as ollama builds it, ``"stream": false`` and all), and
    ``on_resumed``: called with the :class:`~resilient_stream.StreamResult` of each
    call the resume engine carried (``result.verified`` is the flag ollama's types
    have no field for; see :class:`ResilientTransport`).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        config: StreamConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        upgrade_non_streaming: bool | None = None,
        on_resumed: Callable[[StreamResult], None] | None = None,
        **kwargs: Any,
    ) -> None:
        cfg = client_config(config, kwargs.get("timeout"), kwargs.get("verify"))
        self.resilient_transport = ResilientTransport(
            transport,
            config=cfg,
            upgrade_non_streaming=upgrades(upgrade_non_streaming),
            on_resumed=on_resumed,
        )
        """The transport below the client (its :meth:`~ResilientTransport.client_for`
        gives the ``StreamClient`` of a base URL)."""
        super().__init__(host, transport=self.resilient_transport, **kwargs)


class Client(ollama.Client):
    """``ollama.Client`` whose streams resume: ``from resilient_stream.ollama import
    Client`` instead of ``from ollama import Client``.

    The same arguments as :class:`AsyncClient`; ``transport`` is an *async* transport
    (the :class:`ResilientSyncTransport` runs the engine on its own event loop thread,
    stopped by :meth:`close`).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        config: StreamConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        upgrade_non_streaming: bool | None = None,
        on_resumed: Callable[[StreamResult], None] | None = None,
        **kwargs: Any,
    ) -> None:
        cfg = client_config(config, kwargs.get("timeout"), kwargs.get("verify"))
        self.resilient_transport = ResilientSyncTransport(
            transport,
            config=cfg,
            upgrade_non_streaming=upgrades(upgrade_non_streaming),
            on_resumed=on_resumed,
        )
        """The transport below the client."""
        super().__init__(host, transport=self.resilient_transport, **kwargs)


#: The environment's say on ``upgrade_non_streaming`` (for code that cannot pass it).
UPGRADE_ENV = "RESILIENT_OLLAMA_UPGRADE_NON_STREAMING"


def upgrades(choice: bool | None) -> bool:
    """Whether ``stream=False`` calls are streamed underneath: the argument, else the
    environment (``1``/``true``/``yes``/``on``), else off, since ollama's own tests and
    any mock that matches request bodies expect ``"stream": false`` on the wire."""
    if choice is not None:
        return choice
    value = os.environ.get(UPGRADE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{UPGRADE_ENV}={value!r}: use 1 or 0")


def client_config(config: StreamConfig | None, timeout: Any, verify: Any) -> StreamConfig:
    """The resumed streams' config: ``config`` (or :func:`default_config`) with
    ollama's ``timeout=`` and httpx's ``verify=`` mapped onto its knobs."""
    cfg = config if config is not None else default_config()
    overrides: dict[str, Any] = timeout_overrides(timeout)
    if isinstance(verify, bool):
        overrides["verify_tls"] = verify
    return cfg.replace(**overrides) if overrides else cfg


def default_config() -> StreamConfig:
    """``StreamConfig.load()``, but quiet (``warning``) unless the log level was chosen
    in the environment or the TOML file: ollama-python logs nothing."""
    cfg = StreamConfig.load()
    chosen = f"{ENV_PREFIX}LOG_LEVEL" in os.environ or "log_level" in _read_toml(None)
    return cfg if chosen else cfg.replace(log_level="warning")


def timeout_overrides(timeout: Any) -> dict[str, float]:
    """An httpx-style timeout -> StreamConfig knobs (``None``: the config's own, since
    nothing waits forever; the stream's stall timeouts apply instead)."""
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


__all__ = [
    "UPGRADE_ENV",
    "AsyncClient",
    "Client",
    "client_config",
    "default_config",
    "timeout_overrides",
    "upgrades",
]
