"""NDJSON framing and Ollama chunk types (sans-I/O)."""

from .chunks import (
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
from .ndjson import DEFAULT_MAX_LINE_BYTES, ChunkDecoder, NdjsonFramer

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
