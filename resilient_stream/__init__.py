"""resilient-stream: LLM token streams that survive the network.

from resilient_stream import StreamClient, StreamConfig

async with StreamClient("http://127.0.0.1:11434") as client:
    stream = client.generate(model="qwen3:1.7b", prompt="Why is the sky blue?")
    async for chunk in stream:
        print(chunk.response, end="")
    print(stream.result.resumes)
"""

from . import errors
from .client import StreamClient
from .config import StreamConfig
from .errors import StreamError
from .formats.ollama.types import ChatChunk, GenerateChunk, Message
from .result import Seam, StreamResult
from .sdk import ResilientSyncTransport, ResilientTransport
from .stream import ResilientStream

__all__ = [
    "ChatChunk",
    "GenerateChunk",
    "Message",
    "ResilientStream",
    "ResilientSyncTransport",
    "ResilientTransport",
    "Seam",
    "StreamClient",
    "StreamConfig",
    "StreamError",
    "StreamResult",
    "errors",
]
__version__ = "0.1.0"
