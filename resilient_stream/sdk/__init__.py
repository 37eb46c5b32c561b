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

See docs/sdk.md.
"""

from .sync import ResilientSyncTransport
from .transport import ResilientTransport

__all__ = ["ResilientSyncTransport", "ResilientTransport"]
