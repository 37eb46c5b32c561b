"""Ollama chunks back into NDJSON lines (sans-I/O): the inverse of ``framing.py``.

Writes what Ollama writes (``api/types.go``): the fields in Ollama's order;
``model``, ``created_at``, ``response`` (generate) or ``message`` with its
``role`` and ``content`` (chat), and ``done`` always; every other field only
when it is set. So ``decode(encode(chunks)) == chunks``, and ollama-python,
whose models require the always-present fields, reads the lines as it reads
Ollama's.

Used by the reference server, which splices its token lines from
:func:`text_affixes` (encoded once per stream) and encodes the rest with
:func:`encode_line` (whole answers with :func:`encode_chunk`).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .types import ChatChunk, GenerateChunk, Message, ToolCall

_enc = msgspec.json.Encoder().encode

#: The metrics of a final chunk, in Ollama's order (``api.Metrics``).
_METRICS = (
    (b',"total_duration":', "total_duration"),
    (b',"load_duration":', "load_duration"),
    (b',"prompt_eval_count":', "prompt_eval_count"),
    (b',"prompt_eval_duration":', "prompt_eval_duration"),
    (b',"eval_count":', "eval_count"),
    (b',"eval_duration":', "eval_duration"),
)


def encode_line(chunk: GenerateChunk | ChatChunk) -> bytes:
    """One NDJSON line, with its ``\\n``."""
    return encode_chunk(chunk) + b"\n"


def encode_chunk(chunk: GenerateChunk | ChatChunk) -> bytes:
    """The JSON object of one chunk (also the whole body of a ``stream: false`` answer)."""
    out = [b'{"model":', _enc(chunk.model), b',"created_at":', _enc(chunk.created_at)]
    if isinstance(chunk, ChatChunk):
        out += (b',"message":', _message(chunk.message))
        _done(chunk, out)
        if chunk.logprobs is not None:
            out += (b',"logprobs":', _enc(chunk.logprobs))
        _metrics(chunk, out)
    else:
        out += (b',"response":', _enc(chunk.response))
        if chunk.thinking is not None:
            out += (b',"thinking":', _enc(chunk.thinking))
        _done(chunk, out)
        if chunk.context is not None:
            out += (b',"context":', _enc(chunk.context))
        _metrics(chunk, out)
        if chunk.logprobs is not None:
            out += (b',"logprobs":', _enc(chunk.logprobs))
    out.append(b"}")
    return b"".join(out)


def encode_lines(chunks: Iterable[GenerateChunk | ChatChunk]) -> bytes:
    """An NDJSON body."""
    return b"".join(map(encode_line, chunks))


def error_line(message: str) -> bytes:
    """The line with which Ollama fails mid-stream (``{"error": "..."}``)."""
    return error_body(message) + b"\n"


def error_body(message: str) -> bytes:
    """Ollama's error object, the whole body of an error status."""
    return b'{"error":' + _enc(message) + b"}"


def text_affixes(
    model: str, created_at: str, *, chat: bool, thinking: bool = False
) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` such that ``prefix + json(text) + suffix`` is the line of a
    chunk that carries only ``text`` (as ``thinking`` when asked), byte for byte what
    :func:`encode_line` makes of it; for a server that streams many such lines."""
    head = b'{"model":' + _enc(model) + b',"created_at":' + _enc(created_at)
    if chat:
        field = b',"content":"","thinking":' if thinking else b',"content":'
        return head + b',"message":{"role":"assistant"' + field, b'},"done":false}\n'
    field = b',"response":"","thinking":' if thinking else b',"response":'
    return head + field, b',"done":false}\n'


def _done(chunk: GenerateChunk | ChatChunk, out: list[bytes]) -> None:
    out.append(b',"done":true' if chunk.done else b',"done":false')
    if chunk.done_reason is not None:
        out += (b',"done_reason":', _enc(chunk.done_reason))


def _metrics(chunk: GenerateChunk | ChatChunk, out: list[bytes]) -> None:
    for key, name in _METRICS:
        value = getattr(chunk, name)
        if value is not None:
            out += (key, _enc(value))


def _message(m: Message) -> bytes:
    out = [b'{"role":', _enc(m.role), b',"content":', _enc(m.content)]
    if m.thinking is not None:
        out += (b',"thinking":', _enc(m.thinking))
    if m.images is not None:
        out += (b',"images":', _enc(m.images))
    if m.tool_calls is not None:
        out += (b',"tool_calls":[', b",".join(map(_tool_call, m.tool_calls)), b"]")
    if m.tool_name is not None:
        out += (b',"tool_name":', _enc(m.tool_name))
    out.append(b"}")
    return b"".join(out)


def _tool_call(call: ToolCall) -> bytes:
    """A tool call; ``function.name`` and ``function.arguments`` always (ollama-python
    requires both), the rest when set."""
    f = call.function
    out = [b"{"]
    if call.id is not None:
        out += (b'"id":', _enc(call.id), b",")
    if call.type is not None:
        out += (b'"type":', _enc(call.type), b",")
    out += (b'"function":{', b'"name":', _enc(f.name), b',"arguments":', _enc(f.arguments))
    if f.index is not None:
        out += (b',"index":', _enc(f.index))
    out.append(b"}}")
    return b"".join(out)
