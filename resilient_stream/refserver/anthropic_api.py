"""Anthropic's Messages endpoint on the reference server (sans-I/O, like
``openai_api.py``, with which it shares ``replies.py``).

``POST /v1/messages`` with ``stream: true`` (named SSE events, the shape the API
sends: ``message_start``, ``content_block_start``, ``ping``, one
``content_block_delta`` per token, ``content_block_stop``, ``message_delta`` with
the cumulative ``usage.output_tokens``, ``message_stop``) or ``stream: false`` (one
``message`` object), on the same reference model as ``/api/chat``: a trailing
assistant message is continued (prefill), so a resumed request continues exactly.

Like the API: ``max_tokens`` is required; a final assistant message that ends with
whitespace is a 400 (``invalid_request_error``); errors are
``{"type": "error", "error": {"type": ..., "message": ...}}``, and the
``error_line`` fault sends an ``event: error`` (``overloaded_error``). Extended
thinking is not served (a 400). Server-side faults count token events, as on the
other endpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from resilient_stream.formats import sse
from resilient_stream.formats.anthropic import encoder
from resilient_stream.formats.anthropic.types import (
    Delta,
    ErrorInfo,
    Event,
    MessagesRequest,
    Usage,
)
from resilient_stream.formats.ollama.types import Message
from resilient_stream.refserver import model
from resilient_stream.refserver.faults import BEFORE_HEADERS, Fault
from resilient_stream.refserver.replies import (
    DECODE_ERRORS,
    JSON,
    LineStream,
    Reply,
    invalid_body,
    model_not_found,
    stream_class,
)
from resilient_stream.refserver.settings import ServerSettings, ServerStats

SSE = sse.MEDIA_TYPE.encode()
PATH = "/v1/messages"
PATHS = frozenset({PATH})

_decoder = msgspec.json.Decoder(MessagesRequest)
_encode = msgspec.json.Encoder().encode
_STOP_REASONS = {"length": "max_tokens", "stop": "end_turn"}


def error_body(kind: str, message: str) -> bytes:
    return encoder.encode_error(ErrorInfo(type=kind, message=message))


class MessageLines:
    """The Messages spelling of a stream's lines (a :class:`~.replies.LineFormat`)."""

    __slots__ = ("_id", "_model", "_prompt_tokens", "content_prefix", "opening", "suffix")

    think_prefix = b""

    def __init__(self, *, model_name: str, stream_id: str, prompt_tokens: int) -> None:
        self._id, self._model, self._prompt_tokens = stream_id, model_name, prompt_tokens
        self.content_prefix, self.suffix = encoder.text_affixes(0)
        message: dict[str, Any] = {
            "id": stream_id,
            "type": "message",
            "role": "assistant",
            "model": model_name,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
        }
        self.opening = (
            encoder.encode_event(Event(type="message_start", message=message))
            + encoder.encode_event(
                Event(
                    type="content_block_start", index=0, content_block={"type": "text", "text": ""}
                )
            )
            + encoder.encode_event(Event(type="ping"))
        )

    def final_line(self, lines: LineStream, text: str) -> bytes:
        reason = _STOP_REASONS.get(lines.gen.done_reason or "stop", "end_turn")
        out = self.opening if lines.tokens == 0 else b""
        if text:
            out += self.content_prefix + msgspec.json.encode(text) + self.suffix
        out += encoder.encode_event(Event(type="content_block_stop", index=0))
        out += encoder.encode_event(
            Event(
                type="message_delta",
                delta=Delta(stop_reason=reason),
                usage=Usage(output_tokens=lines.tokens),
            )
        )
        return out + encoder.MESSAGE_STOP

    def error_line(self, message: str) -> bytes:
        return encoder.error_event(ErrorInfo(type="overloaded_error", message=message))

    def counted_suffix(self, tokens: int) -> bytes:
        return b""


class _Whole(msgspec.Struct):
    id: str
    model: str
    content: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, int]
    type: str = "message"
    role: str = "assistant"
    stop_sequence: None = None


def handle(
    body: bytes,
    fault: Fault | None,
    *,
    index: int,
    stats: ServerStats,
    settings: ServerSettings,
    stop_probability: float,
    vocab: model.Vocabulary,
    unknown_model: Callable[[str], bool],
) -> Reply:
    """Answer one ``POST /v1/messages``."""
    start_ns = time.perf_counter_ns()
    try:
        req = _decoder.decode(body)
    except DECODE_ERRORS as exc:
        return _bad(invalid_body(exc))
    if not req.model:
        return _bad("model: field required")
    if unknown_model(req.model):
        return Reply(404, JSON, error_body("not_found_error", model_not_found(req.model)))
    if req.max_tokens < 1:
        return _bad("max_tokens: must be at least 1")
    if not req.messages:
        return _bad("messages: at least one message is required")
    if isinstance(req.thinking, dict) and req.thinking.get("type") not in (None, "disabled"):
        return _bad("thinking: not supported by the reference server")
    msgs = [Message(role="system", content=_text(req.system))] if req.system else []
    msgs += [Message(role=m.role, content=_text(m.content)) for m in req.messages]
    if msgs[-1].role == "assistant" and msgs[-1].content != msgs[-1].content.rstrip():
        return _bad("messages: final assistant content cannot end with trailing whitespace")
    context, _ = model.render_chat(msgs, think=False)
    gen = model.Generation(
        context,
        thinking=False,
        num_predict=req.max_tokens,
        stop_probability=stop_probability,
        max_tokens=settings.max_tokens,
        vocab=vocab,
    )
    stream_id = f"msg_ref{index}"
    prompt_tokens = model.estimate_tokens(context)
    if not req.stream:
        content, _ = model.run(gen)
        stats.tokens_generated += gen.count
        whole = _Whole(
            id=stream_id,
            model=req.model,
            content=[{"type": "text", "text": content}],
            stop_reason=_STOP_REASONS.get(gen.done_reason or "stop", "end_turn"),
            usage={"input_tokens": prompt_tokens, "output_tokens": gen.count},
        )
        reply = Reply(200, JSON, _encode(whole))
        reply.delay = settings.first_token_delay
        if settings.tokens_per_second > 0:
            reply.delay += gen.count / settings.tokens_per_second
        return reply
    line_format = MessageLines(
        model_name=req.model, stream_id=stream_id, prompt_tokens=prompt_tokens
    )
    cls = stream_class(settings.final_chunk_text, settings.tokens_per_chunk)
    lines = cls(
        gen,
        line_format,
        prompt_tokens=prompt_tokens,
        start_ns=start_ns,
        stats=stats,
        fault=fault if fault is not None and fault.kind not in BEFORE_HEADERS else None,
    )
    return Reply(200, SSE, stream=lines, extra_headers=[(b"cache-control", b"no-cache")])


def _bad(message: str) -> Reply:
    return Reply(400, JSON, error_body("invalid_request_error", message))


def _text(content: str | list[Any] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(
        str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
    )
