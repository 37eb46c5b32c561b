"""OpenAI chunks back into SSE events (sans-I/O): the inverse of ``framing.py``.

:func:`encode_event` writes one chunk as one ``data:`` event, the way OpenAI
and vLLM write it: ``id``, ``object``, ``created``, ``model``, then
``system_fingerprint`` when set, ``choices`` (each with ``index``, its
``delta`` or ``text``, ``logprobs`` and ``finish_reason``, ``null`` or not) and
``usage`` when set. Our own ``done`` field never goes on the wire.

:func:`encode_events` writes the chunks a caller reads (what the decoder
made) as a body: the final chunk (``done``) becomes what a server sends at the
end, its ``finish_reason`` event, a ``choices: []`` event with ``usage`` when
there is usage, and ``data: [DONE]``. So ``decode(encode_events(chunks)) ==
chunks``.

Used by the reference server, which splices its token events from
:func:`text_affixes` (encoded once per stream) and encodes the rest here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .framing import DONE
from .types import (
    ChatChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionChunk,
    Delta,
    ErrorInfo,
    ToolCallDelta,
    Usage,
)

_enc = msgspec.json.Encoder().encode

#: The event that ends a stream.
DONE_EVENT = b"data: " + DONE + b"\n\n"


def encode_event(chunk: ChatCompletionChunk | CompletionChunk) -> bytes:
    """One ``data:`` event, with the blank line that ends it."""
    return b"data: " + encode_chunk(chunk) + b"\n\n"


def encode_chunk(chunk: ChatCompletionChunk | CompletionChunk) -> bytes:
    """The JSON of one chunk."""
    out = [_head(chunk.id, chunk.object, chunk.created, chunk.model, chunk.system_fingerprint)]
    if isinstance(chunk, ChatCompletionChunk):
        out.append(b",".join(map(_chat_choice, chunk.choices)))
    else:
        out.append(b",".join(map(_completion_choice, chunk.choices)))
    out.append(b"]")
    if chunk.usage is not None:
        out += (b',"usage":', encode_usage(chunk.usage))
    out.append(b"}")
    return b"".join(out)


def encode_events(chunks: Iterable[ChatCompletionChunk | CompletionChunk]) -> bytes:
    """An SSE body of the chunks a caller reads, ending like a server ends it."""
    out: list[bytes] = []
    for chunk in chunks:
        if not chunk.done:
            out.append(encode_event(chunk))
            continue
        usage = chunk.usage
        out.append(encode_event(msgspec.structs.replace(chunk, usage=None, done=False)))
        if usage is not None:
            out.append(encode_event(msgspec.structs.replace(chunk, choices=[], usage=usage)))
        out.append(DONE_EVENT)
    return b"".join(out)


def encode_usage(usage: Usage) -> bytes:
    """``usage``: the three counts always, the details when set."""
    out = [
        b'{"prompt_tokens":',
        _enc(usage.prompt_tokens),
        b',"completion_tokens":',
        _enc(usage.completion_tokens),
        b',"total_tokens":',
        _enc(usage.total_tokens),
    ]
    if usage.prompt_tokens_details is not None:
        out += (b',"prompt_tokens_details":', _enc(usage.prompt_tokens_details))
    if usage.completion_tokens_details is not None:
        out += (b',"completion_tokens_details":', _enc(usage.completion_tokens_details))
    out.append(b"}")
    return b"".join(out)


def encode_error(error: ErrorInfo) -> bytes:
    """OpenAI's error object (``{"error": {...}}``, every key present): a whole error
    body, or the ``data`` of an error event mid-stream."""
    return (
        b'{"error":{"message":'
        + _enc(error.message)
        + b',"type":'
        + _enc(error.type)
        + b',"param":'
        + _enc(error.param)
        + b',"code":'
        + _enc(error.code)
        + b"}}"
    )


def text_affixes(
    id: str, created: int, model: str, *, chat: bool, thinking: bool = False
) -> tuple[bytes, bytes]:
    """``(prefix, suffix)`` such that ``prefix + json(text) + suffix`` is the event of a
    chunk whose only choice carries only ``text`` (in chat, as ``reasoning_content`` when
    asked), byte for byte what :func:`encode_event` makes of it; for a server that
    streams many."""
    obj = (ChatCompletionChunk() if chat else CompletionChunk()).object
    head = b"data: " + _head(id, obj, created, model, None) + b'{"index":0,'
    tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
    if not chat:
        return head + b'"text":', tail
    field = b'"delta":{"reasoning_content":' if thinking else b'"delta":{"content":'
    return head + field, b"}" + tail


def _head(id: str, obj: str, created: int, model: str, fingerprint: str | None) -> bytes:
    """From ``{`` to the opening ``[`` of ``choices``."""
    out = [
        b'{"id":',
        _enc(id),
        b',"object":',
        _enc(obj),
        b',"created":',
        _enc(created),
        b',"model":',
        _enc(model),
    ]
    if fingerprint is not None:
        out += (b',"system_fingerprint":', _enc(fingerprint))
    out.append(b',"choices":[')
    return b"".join(out)


def _chat_choice(c: ChatChoice) -> bytes:
    return _choice(c.index, b',"delta":' + _delta(c.delta), c.logprobs, c.finish_reason)


def _completion_choice(c: CompletionChoice) -> bytes:
    return _choice(c.index, b',"text":' + _enc(c.text), c.logprobs, c.finish_reason)


def _choice(index: int, body: bytes, logprobs: Any, finish_reason: str | None) -> bytes:
    return (
        b'{"index":'
        + _enc(index)
        + body
        + b',"logprobs":'
        + _enc(logprobs)
        + b',"finish_reason":'
        + _enc(finish_reason)
        + b"}"
    )


def _keys(*names: str) -> tuple[tuple[bytes, str], ...]:
    return tuple((b'"' + n.encode() + b'":', n) for n in names)


#: Fields written only when set (a delta names only what it carries: ``{}`` at the end).
_DELTA = _keys("role", "content", "refusal", "reasoning_content", "reasoning")
_TOOL_CALL = _keys("id", "type", "function")


def _set(obj: Any, keys: tuple[tuple[bytes, str], ...]) -> list[bytes]:
    return [key + _enc(v) for key, name in keys if (v := getattr(obj, name)) is not None]


def _delta(d: Delta) -> bytes:
    out = _set(d, _DELTA)
    if d.tool_calls is not None:
        out.append(b'"tool_calls":[' + b",".join(map(_tool_call, d.tool_calls)) + b"]")
    return b"{" + b",".join(out) + b"}"


def _tool_call(t: ToolCallDelta) -> bytes:
    """A tool call delta; ``index`` always (the SDKs require it), the rest when set."""
    return b"{" + b",".join([b'"index":' + _enc(t.index), *_set(t, _TOOL_CALL)]) + b"}"
