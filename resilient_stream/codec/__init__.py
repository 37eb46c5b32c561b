"""Body decoding before framing (``content_encoding.py``: gzip, deflate, br, zstd), and
the public names of the NDJSON codec and Ollama's chunk types.

Those names live in :mod:`resilient_stream.formats` (``formats/ndjson.py``,
``formats/ollama/``) and are handed on here, where they have always been imported
from.
"""

from ..formats.ndjson import DEFAULT_MAX_LINE_BYTES, NdjsonFramer
from ..formats.ollama.framing import ChunkDecoder
from ..formats.ollama.types import (
    ChatChunk,
    ChatRequest,
    Chunk,
    GenerateChunk,
    GenerateRequest,
    Logprob,
    Message,
    ToolCall,
    ToolCallFunction,
)

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ChatChunk",
    "ChatRequest",
    "Chunk",
    "ChunkDecoder",
    "GenerateChunk",
    "GenerateRequest",
    "Logprob",
    "Message",
    "NdjsonFramer",
    "ToolCall",
    "ToolCallFunction",
]
