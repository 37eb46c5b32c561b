"""Resume under any httpx-based SDK: one transport line.

    import httpx, ollama, openai
    from resilient_stream.sdk import ResilientSyncTransport, ResilientTransport

    client = ollama.AsyncClient(host=url, transport=ResilientTransport())
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="...",
                                http_client=httpx.AsyncClient(transport=ResilientTransport()))

    # sync SDKs: the same engine, on the transport's own event loop thread
    client = ollama.Client(host=url, transport=ResilientSyncTransport())
    client = openai.OpenAI(base_url=url + "/v1", api_key="...",
                           http_client=httpx.Client(transport=ResilientSyncTransport()))

    # SDKs built on httpx2 (anthropic>=1 needs it; openai>=3 takes either): bridged
    client = anthropic.AsyncAnthropic(http_client=httpx2.AsyncClient(transport=Httpx2Transport()))

See docs/sdk.md.
"""

from typing import TYPE_CHECKING, Any

from .sync import ResilientSyncTransport
from .transport import ResilientTransport

if TYPE_CHECKING:
    from .httpx2_bridge import Httpx2SyncTransport, Httpx2Transport

__all__ = ["Httpx2SyncTransport", "Httpx2Transport", "ResilientSyncTransport", "ResilientTransport"]


def __getattr__(name: str) -> Any:
    """The httpx2 bridge loads (and needs httpx2) only when it is asked for."""
    if name in ("Httpx2Transport", "Httpx2SyncTransport"):
        from . import httpx2_bridge

        return getattr(httpx2_bridge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
