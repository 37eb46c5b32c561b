"""What a server can do for resume, found out once per base URL and cached.

    caps = await detect_capabilities(client)          # StreamClient or httpx.AsyncClient
    stream = openai_completion(client, ..., flavor=caps.flavor)
    chat = openai_chat(client, ..., flavor=caps.flavor, chat_template=caps.template())

Three cheap GETs tell the servers we know apart (:func:`classify` decides, sans-I/O):

* ``GET /props``: llama-server answers with ``build_info``,
  ``default_generation_settings`` and the model's ``chat_template`` (Jinja)
  -> flavor ``"llama-server"``: token ids on ``/completion``.
* ``GET /api/version``: Ollama answers ``{"version": ...}`` -> ``"ollama"``.
* ``GET /v1/models``: ``owned_by`` is ``"llamacpp"`` for llama-server, ``"vllm"``
  for vLLM; llama-cpp-python says ``"me"`` -> ``"generic"``, and it closes a
  trailing assistant message, so resume its chats with a ``chat_template``.

Anything else is ``"generic"``. A probe that fails (refused, 404, not JSON)
only rules its server out. Results are cached per base URL in a
:class:`CapabilityCache` (a module-wide one by default).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from .formats.llamacpp.template import ChatTemplate
from .formats.openai.planner import Flavor

PROBE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ServerCapabilities:
    """What resume can use on one server."""

    url: str
    #: "llama-server", "ollama", "vllm", "llama-cpp-python" or "unknown".
    server: str
    #: The flavor to give openai_chat / openai_completion.
    flavor: Flavor
    #: The server takes prompts as token ids and streams the generated ids.
    token_ids: bool = False
    #: The model's chat template (Jinja), when the server publishes it.
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    #: A trailing assistant message is continued by the chat endpoint (None: unknown).
    continues_prefill: bool | None = None
    version: str | None = None

    def template(self) -> ChatTemplate | None:
        """The published chat template, rendered with the server's BOS/EOS strings (as
        llama.cpp renders it), for ``openai_chat(..., chat_template=...)``."""
        if not self.chat_template:
            return None
        return ChatTemplate.jinja(
            self.chat_template, bos_token=self.bos_token, eos_token=self.eos_token
        )


def classify(
    url: str,
    *,
    props: Any = None,
    ollama_version: Any = None,
    models: Any = None,
) -> ServerCapabilities:
    """The capabilities that the probes' JSON answers (None: no answer) show."""
    if isinstance(props, dict) and (
        "build_info" in props or "default_generation_settings" in props
    ):
        template = props.get("chat_template")
        return ServerCapabilities(
            url=url,
            server="llama-server",
            flavor="llama-server",
            token_ids=True,
            chat_template=template if isinstance(template, str) and template else None,
            bos_token=str(props.get("bos_token") or ""),
            eos_token=str(props.get("eos_token") or ""),
            continues_prefill=True,  # measured on the real-model tier (docs/realmodel.md)
            version=str(props.get("build_info") or "") or None,
        )
    if isinstance(ollama_version, dict) and isinstance(ollama_version.get("version"), str):
        return ServerCapabilities(
            url=url,
            server="ollama",
            flavor="ollama",
            continues_prefill=True,
            version=ollama_version["version"],
        )
    owners = _owners(models)
    if "llamacpp" in owners:  # llama-server with /props turned off
        return ServerCapabilities(url=url, server="llama-server", flavor="llamacpp")
    if "vllm" in owners:
        return ServerCapabilities(url=url, server="vllm", flavor="vllm", continues_prefill=True)
    if "me" in owners:
        return ServerCapabilities(
            url=url, server="llama-cpp-python", flavor="llama-cpp-python", continues_prefill=False
        )
    return ServerCapabilities(url=url, server="unknown", flavor="generic")


def _owners(models: Any) -> set[str]:
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list):
        return set()
    return {str(m.get("owned_by")) for m in data if isinstance(m, dict)}


class CapabilityCache:
    """Detected capabilities per base URL; concurrent callers share one detection."""

    def __init__(self) -> None:
        self._found: dict[str, ServerCapabilities] = {}
        self._pending: dict[str, asyncio.Future[ServerCapabilities]] = {}
        #: Detections made (probes sent), for tests and logs.
        self.detections = 0

    def get(self, url: str) -> ServerCapabilities | None:
        return self._found.get(url.rstrip("/"))

    def forget(self, url: str | None = None) -> None:
        if url is None:
            self._found.clear()
        else:
            self._found.pop(url.rstrip("/"), None)

    async def detect(self, http: httpx.AsyncClient, url: str) -> ServerCapabilities:
        url = url.rstrip("/")
        found = self._found.get(url)
        if found is not None:
            return found
        pending = self._pending.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ServerCapabilities] = asyncio.get_running_loop().create_future()
        self._pending[url] = future
        try:
            self.detections += 1
            props, version, models = await asyncio.gather(
                _get_json(http, url + "/props"),
                _get_json(http, url + "/api/version"),
                _get_json(http, url + "/v1/models"),
            )
            caps = classify(url, props=props, ollama_version=version, models=models)
            self._found[url] = caps
            future.set_result(caps)
            return caps
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody logs it as lost
            raise
        finally:
            del self._pending[url]


async def _get_json(http: httpx.AsyncClient, url: str) -> Any:
    """The JSON a GET answers with (None: no such endpoint, or no JSON)."""
    try:
        response = await http.get(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


DEFAULT_CACHE = CapabilityCache()


async def detect_capabilities(
    client: Any, url: str | None = None, *, cache: CapabilityCache | None = None
) -> ServerCapabilities:
    """The capabilities of ``url`` (default: the client's first replica), cached.

    ``client`` is a :class:`~resilient_stream.StreamClient` (its connection pool is
    used) or an ``httpx.AsyncClient``.
    """
    http = client if isinstance(client, httpx.AsyncClient) else client.http
    if url is None:
        replicas = getattr(client, "replicas", None)
        if replicas is None:
            raise ValueError("detect_capabilities needs url= with an httpx.AsyncClient")
        url = _first_url(replicas)
    return await (cache or DEFAULT_CACHE).detect(http, url)


def _first_url(replicas: Any) -> str:
    members = getattr(replicas, "replicas", None)
    if members:
        return str(members[0].url)
    raise ValueError("cannot tell the client's base URL; pass url=")
