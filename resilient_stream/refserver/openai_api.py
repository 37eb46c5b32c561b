"""OpenAI-compatible endpoints of the reference server (sans-I/O, like ``handler.py``,
with which it shares ``replies.py``).

``POST /v1/chat/completions`` and ``POST /v1/completions``, ``stream: true``
(SSE, ``text/event-stream``) or ``stream: false`` (one JSON object), on the
same reference model as ``/api/*``:

* chat renders its messages like ``/api/chat``: a trailing assistant message
  is continued (prefill) unless the request says otherwise.
  ``continue_final_message: true`` requires a trailing assistant message;
  ``add_generation_prompt: true`` or ``continue_final_message: false`` close
  it and start a new answer (vLLM's default); both true is a 400, like vLLM.
  ``reasoning_effort`` (anything but ``"none"``) turns thinking on; thinking
  streams as ``delta.reasoning_content``, and a prefill's
  ``reasoning_content``/``reasoning`` is continued.
* completions treat ``prompt`` as raw text (like ``/api/generate`` with
  ``raw``), so ``prompt + output[:k]`` continues with ``output[k:]``.

``max_tokens`` / ``max_completion_tokens`` act like ``num_predict``. The
stream opens with a role-only chunk (chat), ends with a ``finish_reason``
chunk, a usage chunk when ``stream_options.include_usage`` is set, then
``data: [DONE]``: the shape vLLM and OpenAI send. Server-side faults work as
on ``/api/*``: they count token events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from resilient_stream.formats import sse
from resilient_stream.formats.ollama.types import Message
from resilient_stream.formats.openai import encoder
from resilient_stream.formats.openai.types import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    Delta,
    ErrorInfo,
    Usage,
)
from resilient_stream.refserver import model
from resilient_stream.refserver.faults import BEFORE_HEADERS, Fault
from resilient_stream.refserver.replies import (
    DECODE_ERRORS,
    JSON,
    TEXT,
    LineStream,
    Reply,
    format_generation,
    invalid_body,
    model_not_found,
    stream_class,
)
from resilient_stream.refserver.settings import ServerSettings, ServerStats

SSE = sse.MEDIA_TYPE.encode()
CHAT_PATH = "/v1/chat/completions"
COMPLETION_PATH = "/v1/completions"
PATHS = frozenset({CHAT_PATH, COMPLETION_PATH})

_encode = msgspec.json.Encoder().encode
_chat_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_completion_decoder = msgspec.json.Decoder(CompletionRequest)

# --- wire structs of whole (``stream: false``) objects, which the client never reads --


class _ChatChoice(msgspec.Struct):
    index: int
    message: ChatMessage
    finish_reason: str
    logprobs: None = None


class _TextChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class _Completion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[_ChatChoice] | list[_TextChoice]
    #: Written by the streams' encoder (``formats/openai/encoder.py``).
    usage: msgspec.Raw


class _Model(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "resilient-stream"


class _ModelList(msgspec.Struct):
    data: list[_Model]
    object: str = "list"


def models_body(names: list[str]) -> bytes:
    """``GET /v1/models``: the configured names (or the canonical ``reference``)."""
    return _encode(_ModelList(data=[_Model(id=n) for n in names]))


#: ``GET /v1/models`` without a model list: any name is served; this lists the canonical one.
MODELS = models_body(["reference"])


def openai_error(status: int, message: str, kind: str) -> bytes:
    return encoder.encode_error(ErrorInfo(message=message, type=kind, code=status))


# --- the SSE token stream -----------------------------------------------------------


class SseLines:
    """The SSE spelling of a stream's lines (a :class:`~.replies.LineFormat`): one
    event per token, spliced from the encoder's affixes like NDJSON lines; the
    other events are chunks the encoder writes."""

    __slots__ = (
        "_counted",
        "_created",
        "_id",
        "_include_usage",
        "_model",
        "_prompt_tokens",
        "chat",
        "content_prefix",
        "opening",
        "suffix",
        "think_prefix",
    )

    def __init__(
        self,
        *,
        chat: bool,
        model_name: str,
        stream_id: str,
        include_usage: bool,
        counts: str = "",
        prompt_tokens: int = 0,
    ) -> None:
        """``counts``: what every token event says of the running count: "usage" (vLLM's
        ``continuous_usage_stats``), "timings" (llama-server's ``timings_per_token``),
        or "" (nothing)."""
        self.chat = chat
        self._counted = counts
        self._prompt_tokens = prompt_tokens
        self._id, self._created, self._model = stream_id, int(time.time()), model_name
        self._include_usage = include_usage
        head = (stream_id, self._created, model_name)
        self.content_prefix, self.suffix = encoder.text_affixes(*head, chat=chat)
        self.think_prefix, _ = encoder.text_affixes(*head, chat=chat, thinking=True)
        self.opening = b""
        if chat:  # the role chunk
            role = ChatChoice(delta=Delta(role="assistant", content=""))
            self.opening = encoder.encode_event(self._chunk([role]))

    def _chunk(self, choices: list[Any], usage: Usage | None = None) -> Any:
        tp = ChatCompletionChunk if self.chat else CompletionChunk
        return tp(
            id=self._id, created=self._created, model=self._model, choices=choices, usage=usage
        )

    def final_line(self, lines: LineStream, text: str) -> bytes:
        reason = lines.gen.done_reason or "stop"
        choice: ChatChoice | CompletionChoice
        if self.chat:
            choice = ChatChoice(delta=Delta(content=text or None), finish_reason=reason)
        else:
            choice = CompletionChoice(text=text, finish_reason=reason)
        out = encoder.encode_event(self._chunk([choice]))
        if lines.tokens == 0:
            out = self.opening + out
        if self._include_usage:
            prompt = lines.prompt_tokens
            usage = Usage(prompt, lines.tokens, prompt + lines.tokens)
            out += encoder.encode_event(self._chunk([], usage))
        return out + encoder.DONE_EVENT

    def error_line(self, message: str) -> bytes:
        return b"data: " + openai_error(500, message, "server_error") + b"\n\n"

    def counted_suffix(self, tokens: int) -> bytes:
        kind = self._counted
        if not kind:
            return b""
        end = b"}" if self.chat else b""
        end += b',"logprobs":null,"finish_reason":null}]'
        if kind == "usage":
            p = self._prompt_tokens
            end += b',"usage":' + encoder.encode_usage(Usage(p, tokens, p + tokens))
        else:
            end += b',"timings":{"predicted_n":' + str(tokens).encode() + b"}"
        return end + b"}\n\n"


# --- request handling ------------------------------------------------------------------


def handle(
    path: str,
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
    """Answer one OpenAI-compatible request (``path`` is one of :data:`PATHS`)."""
    start_ns = time.perf_counter_ns()
    chat = path == CHAT_PATH
    req: ChatCompletionRequest | CompletionRequest
    try:
        req = _chat_decoder.decode(body) if chat else _completion_decoder.decode(body)
    except DECODE_ERRORS as exc:
        return _bad(invalid_body(exc))
    if not req.model:
        return _bad("model is required")
    if unknown_model(req.model):
        return Reply(404, JSON, openai_error(404, model_not_found(req.model), "not_found_error"))
    if req.n not in (None, 1):
        return _bad("the reference server supports n=1 only")
    if isinstance(req, ChatCompletionRequest):
        rendered = _render_chat(req)
        if isinstance(rendered, Reply):
            return rendered
        context, thinking = rendered
        limits = [x for x in (req.max_tokens, req.max_completion_tokens) if x is not None]
        fmt = _response_format(req.response_format)
        if isinstance(fmt, Reply):
            return fmt
    else:
        if req.echo:
            return _bad("echo is not supported by the reference server")
        context, thinking = req.prompt, False
        limits = [req.max_tokens] if req.max_tokens is not None else []
        fmt = None
    num_predict = min(limits) if limits else None
    gen: model.TokenSource
    if fmt is None:
        gen = model.Generation(
            context,
            thinking=thinking,
            num_predict=num_predict,
            stop_probability=stop_probability,
            max_tokens=settings.max_tokens,
            vocab=vocab,
        )
    else:
        structured = format_generation(fmt, context, thinking, num_predict, settings, vocab)
        if isinstance(structured, str):
            return _bad(structured)
        gen = structured
    stream_id = f"{'chatcmpl' if chat else 'cmpl'}-ref{index}"
    prompt_tokens = model.estimate_tokens(context)
    if not req.stream:
        reply = _whole(gen, chat, req.model, stream_id, prompt_tokens, stats)
        reply.delay = settings.first_token_delay
        if settings.tokens_per_second > 0:
            reply.delay += gen.count / settings.tokens_per_second
        return reply
    opts = req.stream_options
    counts = ""
    if b'"timings_per_token":true' in body.replace(b" ", b""):
        counts = "timings"
    elif settings.report_tokens or (opts is not None and opts.continuous_usage_stats):
        counts = "usage"
    line_format = SseLines(
        chat=chat,
        model_name=req.model,
        stream_id=stream_id,
        include_usage=bool(opts is not None and opts.include_usage),
        counts=counts,
        prompt_tokens=prompt_tokens,
    )
    cls = stream_class(settings.final_chunk_text, settings.tokens_per_chunk, bool(counts))
    echo = _prefill_echo(req) if settings.echo_prefill else ""
    if echo:
        cls = _echoing(cls)
    lines = cls(
        gen,
        line_format,
        prompt_tokens=prompt_tokens,
        start_ns=start_ns,
        stats=stats,
        fault=fault if fault is not None and fault.kind not in BEFORE_HEADERS else None,
    )
    if echo:
        lines.echo = line_format.content_prefix + msgspec.json.encode(echo)[:-1]  # type: ignore[attr-defined]
    return Reply(200, SSE, stream=lines, extra_headers=[(b"cache-control", b"no-cache")])


def _prefill_echo(req: ChatCompletionRequest | CompletionRequest) -> str:
    """The content of the assistant prefill a chat continues ("": none, or closed)."""
    if not isinstance(req, ChatCompletionRequest) or req.messages[-1].role != "assistant":
        return ""
    if req.continue_final_message is False or (
        req.continue_final_message is None and req.add_generation_prompt is True
    ):
        return ""
    return _text(req.messages[-1].content)


def _echoing(base: type[LineStream]) -> type[LineStream]:
    """``base`` whose first content line starts with the prefill's text (``echo``: the
    line's prefix and the JSON string of that text without its closing quote, so it
    runs on into the first token's string). Only its bytes change: not its counts."""
    cls = _ECHOING.get(base)
    if cls is None:

        def next_line(self: Any) -> bytes:
            line: bytes = base.next_line(self)
            echo: bytes = self.echo
            if echo:
                head = self._content_prefix + b'"'
                at = line.find(head)
                if at >= 0:
                    line = line[:at] + echo + line[at + len(head) :]
                    self.echo = b""
            return line

        cls = _ECHOING[base] = type(
            f"Echoing{base.__name__}", (base,), {"__slots__": ("echo",), "next_line": next_line}
        )
    return cls


_ECHOING: dict[type[LineStream], type[LineStream]] = {}


def _response_format(rf: Any) -> Any:
    """``response_format`` -> an Ollama ``format`` (None, ``"json"`` or a schema), or a
    400 :class:`Reply`: ``json_object`` and ``json_schema`` as Ollama's OpenAI layer maps
    them."""
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        if isinstance(schema, dict):
            return schema
        return _bad("response_format json_schema needs json_schema.schema (an object)")
    return _bad(f"invalid response_format type: {kind!r}")


def _bad(message: str) -> Reply:
    return Reply(400, JSON, openai_error(400, message, "invalid_request_error"))


def _text(content: str | list[Any] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(
        p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def _message(m: ChatMessage) -> Message:
    return Message(
        role=m.role, content=_text(m.content), thinking=m.reasoning_content or m.reasoning
    )


def _render_chat(req: ChatCompletionRequest) -> tuple[str, bool] | Reply:
    cont, gen_prompt = req.continue_final_message, req.add_generation_prompt
    if cont and gen_prompt:
        return _bad("continue_final_message and add_generation_prompt cannot both be true")
    if not req.messages:
        return _bad("messages must not be empty")
    trailing = req.messages[-1].role == "assistant"
    if cont and not trailing:
        return _bad("continue_final_message requires the last message to be an assistant message")
    think = req.reasoning_effort is not None and req.reasoning_effort != "none"
    msgs = [_message(m) for m in req.messages]
    if trailing and (cont is False or (cont is None and gen_prompt is True)):
        # Close the assistant turn and start a new answer (vLLM's default behaviour).
        closed = "".join(
            model.ROLE_TAGS.get(m.role, f"<|{m.role}|>\n") + m.content + model.END_TAG for m in msgs
        )
        opening, thinking = model.render_chat([], think=think)
        return closed + opening, thinking
    return model.render_chat(msgs, think=think)


def _whole(
    gen: model.TokenSource,
    chat: bool,
    model_name: str,
    stream_id: str,
    prompt_tokens: int,
    stats: ServerStats,
) -> Reply:
    content, thinking = model.run(gen)
    stats.tokens_generated += gen.count
    reason = gen.done_reason or "stop"
    choices: list[_ChatChoice] | list[_TextChoice]
    if chat:
        msg = ChatMessage(role="assistant", content=content, reasoning_content=thinking or None)
        choices = [_ChatChoice(index=0, message=msg, finish_reason=reason)]
    else:
        choices = [_TextChoice(index=0, text=content, finish_reason=reason)]
    out = _Completion(
        id=stream_id,
        object="chat.completion" if chat else "text_completion",
        created=int(time.time()),
        model=model_name,
        choices=choices,
        usage=msgspec.Raw(
            encoder.encode_usage(Usage(prompt_tokens, gen.count, prompt_tokens + gen.count))
        ),
    )
    return Reply(200, JSON, _encode(out))


__all__ = ["MODELS", "PATHS", "SSE", "TEXT", "SseLines", "handle", "openai_error"]
