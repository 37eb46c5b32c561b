"""The wire formats a stream can speak, in one explicit table (sans-I/O).

A wire format is one folder: ``ollama/`` (NDJSON), ``openai/`` (SSE),
``anthropic/`` (the Messages API's named SSE events), ``llamacpp/``
(llama-server's native ``/completion`` SSE, with token ids) and
``vllm/`` (vLLM's OpenAI SSE with ``return_token_ids``), each
with its types, its decoder (``framing.py``), its planner, its chunk adapters
and an encoder back to wire bytes. What they share stands beside them:
``ndjson.py`` and ``sse.py`` (body bytes into records), ``records.py`` (records
into typed values) and ``plan.py`` (what a planner answers).

This module is the only place that lists them:

* :data:`FRAMINGS`, by the name an :class:`~resilient_stream.formats.plan.AttemptPlan`
  gives: what a request accepts, the framer (one per attempt: bytes in,
  complete records out), the decoder (stateless, shared: records in, typed
  chunks out) and the reader that calls the two a read (``reader.py``);
* :data:`CHUNK_ADAPTERS`, by chunk type: how the resume machinery reads and
  rewrites the chunks of that type.

Nothing registers itself at import: a new wire format is a new folder and a
line in each table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import ndjson, sse
from .anthropic.adapters import MessageAdapter
from .anthropic.framing import AnthropicDecoder, AnthropicFramer
from .anthropic.types import MessageChunk
from .llamacpp.framing import NativeDecoder
from .ollama.adapters import ChatAdapter, GenerateAdapter
from .ollama.framing import ChunkDecoder, ChunkReader
from .ollama.types import ChatChunk, GenerateChunk
from .openai.adapters import ChatCompletionAdapter, CompletionAdapter
from .openai.framing import OpenAIDecoder, OpenAIFramer
from .openai.types import ChatCompletionChunk, CompletionChunk
from .reader import Reader, RecordReader
from .vllm.framing import VllmDecoder


class Framer(Protocol):
    def feed(self, data: bytes) -> list[bytes]:
        """Bytes as they arrive in, complete records out."""
        ...

    def close(self) -> bytes:
        """End of body: an unterminated record (b"" if none)."""
        ...


class Decoder(Protocol):
    def decode_lines(self, lines: list[bytes]) -> list[Any]:
        """Records in, typed chunks out; raises MalformedChunkError / ServerReportedError
        with ``chunks_before`` set so nothing decoded is lost."""
        ...


@dataclass(frozen=True, slots=True)
class Framing:
    accept: str
    """The media type a request for this body asks for (its ``Accept`` header)."""
    new_framer: Callable[[int], Framer]
    """Makes a framer given the maximum record size in bytes."""
    new_decoder: Callable[[type[Any]], Decoder]
    """Makes a decoder for a chunk type."""
    new_reader: Callable[[int, Any], RecordReader] | None = None
    """Makes an attempt's reader from the maximum record size and the decoder, when the
    format's framer is its reader (None: a :class:`Reader` of a new framer and it)."""

    def reader(self, max_bytes: int, decoder: Decoder) -> RecordReader:
        """An attempt's reader: bytes in, typed chunks out (``reader.py``)."""
        if self.new_reader is not None:
            return self.new_reader(max_bytes, decoder)
        return Reader(self.new_framer(max_bytes), decoder)


class ChunkAdapter(Protocol):
    """How the resume machinery reads and rewrites one chunk type's chunks.

    The machinery is the same for every API: only these few questions differ:
    where is the text, is this the last chunk, how to trim text off a chunk after
    a seam, how to stamp the total token count on the final chunk, and what a
    locally made final chunk looks like.
    """

    def texts(self, chunk: Any) -> tuple[str, str | None]:
        """(text, thinking) carried by the chunk."""
        ...

    def is_done(self, chunk: Any) -> bool: ...

    def facts(self, chunk: Any) -> tuple[bool, str, str | None, int, bool]:
        """``(is_done, *texts, running_tokens, has_payload)`` in one call: what the
        assembler asks of every chunk (four calls cost about 2.5k instructions more a
        chunk)."""
        ...

    def has_payload(self, chunk: Any) -> bool:
        """Carries something besides text (tool calls...): kept even when its text is cut."""
        ...

    def with_texts(self, chunk: Any, text: str, thinking: str) -> Any: ...

    def finalize(self, chunk: Any, tokens: int) -> Any:
        """The final chunk, with the token count of the whole logical stream."""
        ...

    def final_chunk(self, done_reason: str) -> Any:
        """A final chunk made locally (the token budget ran out at an interruption)."""
        ...

    def done_reason(self, final: Any) -> str | None: ...

    def prompt_tokens(self, final: Any) -> int | None: ...

    def running_tokens(self, chunk: Any) -> int:
        """The server's count of the tokens its request generated so far, if the chunk
        carries one (llama-server's ``timings``, vLLM's per-chunk ``usage``); else -1."""
        ...

    def attempt_tokens(self, final: Any) -> int | None:
        """What the final chunk says its request generated (``eval_count``, ``usage``)."""
        ...


FRAMINGS: dict[str, Framing] = {
    "ndjson": Framing(ndjson.MEDIA_TYPE, ndjson.NdjsonFramer, ChunkDecoder, ChunkReader),
    "sse": Framing(sse.MEDIA_TYPE, OpenAIFramer, OpenAIDecoder),
    # llama-server's /completion: plain SSE, no [DONE]; its chunks are always converted
    # to the caller's OpenAI chunks (plan.convert), so it needs no chunk adapter.
    "llamacpp": Framing(sse.MEDIA_TYPE, sse.SseFramer, NativeDecoder),
    # vLLM with return_token_ids: OpenAI SSE whose chunks carry ids; converted like
    # llama-server's (plan.convert), so no chunk adapter either.
    "vllm": Framing(sse.MEDIA_TYPE, OpenAIFramer, VllmDecoder),
    # Anthropic's /v1/messages: named events, text-less ones held (anthropic/framing.py).
    "anthropic": Framing(sse.MEDIA_TYPE, AnthropicFramer, AnthropicDecoder),
}

CHUNK_ADAPTERS: dict[type[Any], ChunkAdapter] = {
    GenerateChunk: GenerateAdapter(),
    ChatChunk: ChatAdapter(),
    ChatCompletionChunk: ChatCompletionAdapter(),
    CompletionChunk: CompletionAdapter(),
    MessageChunk: MessageAdapter(),
}


def framing(name: str) -> Framing:
    """The framing an :class:`AttemptPlan` names."""
    try:
        return FRAMINGS[name]
    except KeyError:
        raise ValueError(f"unknown framing {name!r}; known: {sorted(FRAMINGS)}") from None


def adapter_for(chunk_type: type[Any]) -> ChunkAdapter:
    """How the resume machinery reads chunks of ``chunk_type``."""
    try:
        return CHUNK_ADAPTERS[chunk_type]
    except KeyError:
        raise TypeError(f"no ChunkAdapter for {chunk_type.__name__} in CHUNK_ADAPTERS") from None
