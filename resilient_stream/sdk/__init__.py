"""Resume under any httpx-based SDK: one transport line.

    import httpx, ollama, openai
    from resilient_stream.sdk import ResilientTransport

    client = ollama.AsyncClient(host=url, transport=ResilientTransport())
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="...",
                                http_client=httpx.AsyncClient(transport=ResilientTransport()))

See docs/sdk.md.
"""

from .transport import ResilientTransport

__all__ = ["ResilientTransport"]
