"""Request -> response logic of the reference server, shared by HTTP/1.1 and HTTP/2.

Sans-I/O: :class:`Handler` turns (method, path, body) into a :class:`Reply`,
and a streaming reply carries a :class:`LineStream` that produces NDJSON
lines one at a time. The protocol edges only move bytes and keep time.

Token lines are spliced from precomputed bytes (the model name and timestamp
encoded once per stream, each vocabulary token JSON-encoded once per
process), so a line costs a few concatenations, no dict and no encoder call.
The final line and whole-body replies are msgspec Structs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from resilient_stream.codec.chunks import ChatRequest, GenerateRequest, Message
from resilient_stream.refserver import formats, model
from resilient_stream.refserver.faults import BEFORE_HEADERS, Fault, RequestInfo
from resilient_stream.refserver.settings import ServerSettings, ServerStats

NDJSON = b"application/x-ndjson"
JSON = b"application/json; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
_OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

# --- wire structs for whole objects (field order = Ollama's) -------------------


class _OutMessage(msgspec.Struct, omit_defaults=True, kw_only=True):
    role: str
    content: str
    thinking: str | None = None


class _GenerateFinal(msgspec.Struct, omit_defaults=True, kw_only=True):
    model: str
    created_at: str
    response: str
    thinking: str | None = None
    done: bool  # required: omit_defaults would drop a default of True
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class _ChatFinal(msgspec.Struct, omit_defaults=True, kw_only=True):
    model: str
    created_at: str
    message: _OutMessage
    done: bool  # required: omit_defaults would drop a default of True
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class _Error(msgspec.Struct):
    error: str


class _ModelDetails(msgspec.Struct):
    parent_model: str = ""
    format: str = "gguf"
    family: str = "reference"
    families: list[str] = msgspec.field(default_factory=lambda: ["reference"])
    parameter_size: str = "0B"
    quantization_level: str = "none"


class _TagModel(msgspec.Struct):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: _ModelDetails


class _Tags(msgspec.Struct):
    models: list[_TagModel]


class _ShowRequest(msgspec.Struct):
    model: str = ""
    name: str = ""  # the older spelling, still accepted by Ollama
    verbose: bool | None = None


class _Show(msgspec.Struct):
    modelfile: str
    parameters: str
    template: str
    details: _ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


_encode = msgspec.json.Encoder().encode
_show_decoder = msgspec.json.Decoder(_ShowRequest)
_gen_decoder = msgspec.json.Decoder(GenerateRequest)
_chat_decoder = msgspec.json.Decoder(ChatRequest)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])


def error_body(message: str) -> bytes:
    return _encode(_Error(message))


#: What decoding a request body can raise: msgspec raises RecursionError (not a
#: DecodeError) for JSON nested about 1000 levels deep.
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def invalid_body(exc: Exception) -> str:
    """The ``error`` text of a 400 for a body that does not decode."""
    if isinstance(exc, RecursionError):
        return "invalid request body: JSON nested too deeply"
    return f"invalid request body: {exc}"


def model_key(name: str) -> tuple[str, str, str, str]:
    """Ollama's identity of a model name, ``host/namespace/model:tag`` with the defaults
    ``registry.ollama.ai``, ``library`` and ``latest`` filled in, case-insensitive (so
    ``name``, ``name:latest`` and ``library/NAME`` are one model)."""
    head, _, last = name.strip().lower().rpartition("/")
    model_name, _, tag = last.split("@", 1)[0].partition(":")
    parts = head.split("/") if head else []
    host = parts[-2] if len(parts) >= 2 else "registry.ollama.ai"
    namespace = parts[-1] if parts else "library"
    return host, namespace, model_name, tag or "latest"


def listed_name(name: str) -> str:
    """How ``/api/tags`` shows a configured name: with its tag (``:latest`` by default)."""
    return name if ":" in name.rpartition("/")[2] else name + ":latest"


def model_not_found(name: str) -> str:
    """Ollama's 404 text for an unknown model (``/api/generate``, ``/api/chat``,
    ``/api/show`` since 0.12, and its OpenAI layer's ``error.message``)."""
    return f"model '{name}' not found"


def now_iso() -> str:
    """Ollama's ``created_at`` format: RFC 3339 with microseconds and ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: ``/api/show``'s ``template``: the reference model's chat template, in words.
_TEMPLATE_DOC = (
    "{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"
)

# --- replies -------------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    """What to answer. Exactly one of ``body`` (whole) or ``stream`` (NDJSON) is used."""

    status: int
    content_type: bytes
    body: bytes = b""
    stream: LineStream | None = None
    #: Fault to inject into this reply (mid-stream kinds act through ``stream``).
    fault: Fault | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Seconds to wait before answering a whole-body generation (simulated decode time).
    delay: float = 0.0
    #: A HEAD request: send the headers of ``body`` (its length) but not the body.
    head: bool = False

    @property
    def fault_before_headers(self) -> Fault | None:
        """A fault that acts before headers: status, never_answer, or any fault on a
        whole-body reply other than truncation and error lines."""
        f = self.fault
        if f is None:
            return None
        if f.kind in BEFORE_HEADERS:
            return f
        if self.stream is None and f.kind not in ("truncate", "truncate_line", "error_line"):
            return f
        return None


class LineStream:
    """The NDJSON lines of one streaming generation (sans-I/O).

    Call ``next_line()`` until ``finished``; check ``fault_due()`` after each
    token line (and once before the first) to inject the planned fault.
    """

    __slots__ = (
        "_content_prefix",
        "_first_token_ns",
        "_json",
        "_opening",
        "_prompt_tokens",
        "_start_ns",
        "_suffix",
        "_think_prefix",
        "chat",
        "created_at",
        "fault",
        "fault_after",
        "finished",
        "gen",
        "model_name",
        "stats",
        "stream_start_ns",
        "tokens",
    )

    _SUFFIX = b',"done":false}\n'
    _CHAT_SUFFIX = b'},"done":false}\n'

    def __init__(
        self,
        gen: model.TokenSource,
        *,
        chat: bool,
        model_name: str,
        prompt_tokens: int,
        start_ns: int,
        stats: ServerStats,
        fault: Fault | None = None,
    ) -> None:
        self.gen = gen
        self._json = gen.vocab.json
        self.chat = chat
        self.model_name = model_name
        self.created_at = now_iso()
        head = b'{"model":' + _encode(model_name) + b',"created_at":"' + self.created_at.encode()
        if chat:
            self._content_prefix = head + b'","message":{"role":"assistant","content":'
            self._think_prefix = head + b'","message":{"role":"assistant","content":"","thinking":'
        else:
            self._content_prefix = head + b'","response":'
            self._think_prefix = head + b'","response":"","thinking":'
        self._suffix = self._CHAT_SUFFIX if chat else self._SUFFIX
        #: Bytes sent once, just before the first token (SSE's role chunk).
        self._opening = b""
        self._prompt_tokens = prompt_tokens
        self._start_ns = start_ns
        self.stream_start_ns = time.perf_counter_ns()
        self._first_token_ns = 0
        self.stats = stats
        self.fault = fault
        self.fault_after = fault.after_tokens if fault is not None else -1
        self.tokens = 0
        self.finished = False

    def fault_due(self) -> bool:
        return self.tokens == self.fault_after

    def peek_final(self) -> bool:
        """Whether the next line is the final ``done`` line."""
        return self.gen.peek_done()

    def next_line(self) -> bytes:
        tok = self.gen.step()
        if tok < 0:
            self.finished = True
            return self.final_line()
        if self.tokens == 0:
            self._first_token_ns = time.perf_counter_ns()
        self.tokens += 1
        self.stats.tokens_generated += 1
        prefix = self._think_prefix if self.gen.thinking else self._content_prefix
        line = prefix + self._json[tok] + self._suffix
        return self._opening + line if self.tokens == 1 else line

    def final_line(self, text: str = "") -> bytes:
        """The ``done: true`` line; ``text`` is content it carries (``final_chunk_text``)."""
        now = time.perf_counter_ns()
        first = self._first_token_ns or now
        common: dict[str, Any] = {
            "model": self.model_name,
            "created_at": self.created_at,
            "done": True,
            "done_reason": self.gen.done_reason or "stop",
            "total_duration": now - self._start_ns,
            "load_duration": self.stream_start_ns - self._start_ns,
            "prompt_eval_count": self._prompt_tokens,
            "prompt_eval_duration": first - self.stream_start_ns,
            "eval_count": self.tokens,
            "eval_duration": now - first,
        }
        if self.chat:
            return (
                _encode(_ChatFinal(message=_OutMessage(role="assistant", content=text), **common))
                + b"\n"
            )
        return _encode(_GenerateFinal(response=text, **common)) + b"\n"

    def error_line(self, message: str) -> bytes:
        return _encode(_Error(message)) + b"\n"


def next_line_final_text(self: LineStream) -> bytes:
    """``next_line`` of a stream with ``final_chunk_text``: a content token that ends the
    output goes out in the final line. A separate class method, so that streams without
    the setting pay nothing per token for it."""
    gen = self.gen
    tok = gen.step()
    if tok < 0:
        self.finished = True
        return self.final_line()
    first = self.tokens == 0
    if first:
        self._first_token_ns = time.perf_counter_ns()
    self.tokens += 1
    self.stats.tokens_generated += 1
    if not gen.thinking and gen.peek_done():
        self.finished = True
        line = self.final_line(gen.vocab.tokens[tok])
    else:
        prefix = self._think_prefix if gen.thinking else self._content_prefix
        line = prefix + self._json[tok] + self._suffix
    return self._opening + line if first else line


class FinalTextLineStream(LineStream):
    """A :class:`LineStream` whose last content token rides in the ``done`` line."""

    __slots__ = ()
    next_line = next_line_final_text


def format_generation(
    fmt: Any,
    context: str,
    thinking: bool,
    num_predict: int | None,
    settings: ServerSettings,
    vocab: model.Vocabulary,
) -> model.TokenSource | str:
    """The generation of a request with ``format`` (a plain one if the format is empty),
    or the 400 error text of a format the server refuses."""
    try:
        spec = formats.parse_format(fmt)
    except formats.FormatError as exc:
        return str(exc)
    if spec is None:
        return model.Generation(
            context,
            thinking=thinking,
            num_predict=num_predict,
            stop_probability=model.DEFAULT_STOP_PROBABILITY
            if settings.stop_probability is None
            else settings.stop_probability,
            max_tokens=settings.max_tokens,
            vocab=vocab,
        )
    return formats.FormatGeneration(
        context,
        spec,
        thinking=thinking,
        num_predict=num_predict,
        max_tokens=settings.max_tokens,
        vocab=vocab,
    )


# --- the handler ----------------------------------------------------------------


class Handler:
    """Routes a complete request to a :class:`Reply` (one per request)."""

    def __init__(self, settings: ServerSettings, stats: ServerStats) -> None:
        self.settings = settings
        self.stats = stats
        self.vocab = model.LINE_SEPARATOR_VOCAB if settings.line_separators else model.DEFAULT_VOCAB
        self.stop_probability = (
            model.DEFAULT_STOP_PROBABILITY
            if settings.stop_probability is None
            else settings.stop_probability
        )
        names = settings.models
        #: model_key -> listed name; None: every name is served but ``missing*``.
        self._models = None if names is None else {model_key(n): listed_name(n) for n in names}
        listed = ["reference:latest"] if self._models is None else list(self._models.values())
        self.modified_at = now_iso()
        self._tags = _encode(
            _Tags(
                models=[
                    _TagModel(
                        name=n,
                        model=n,
                        modified_at=self.modified_at,
                        size=len(model.VOCAB),
                        digest=hashlib.sha256(n.encode()).hexdigest(),
                        details=_ModelDetails(),
                    )
                    for n in listed
                ]
            )
        )
        from resilient_stream.refserver import openai_api  # imports this module

        self._openai_models = openai_api.models_body(
            ["reference"] if names is None else list(names)
        )
        self._version = _encode({"version": settings.version})

    def unknown_model(self, name: str) -> bool:
        """Whether ``name`` gets a 404 (see ``ServerSettings.models``)."""
        if self._models is None:
            return name.startswith("missing")
        return model_key(name) not in self._models

    def handle(self, method: str, path: str, body: bytes, protocol: str) -> Reply:
        index = self.stats.requests
        self.stats.requests += 1
        fault: Fault | None = None
        if self.settings.faults is not None:
            try:
                decoded = _dict_decoder.decode(body) if body else {}
            except DECODE_ERRORS:
                decoded = {}
            info = RequestInfo(index=index, path=path, body=decoded, protocol=protocol)  # type: ignore[arg-type]
            fault = self.settings.faults(info)
        reply = self._route(method, path, body, fault)
        reply.fault = fault
        reply.head = method == "HEAD"
        if fault is not None and fault.kind == "status":
            reply.status = fault.status
            reply.content_type = JSON
            reply.body = fault.status_body()
            reply.stream = None
            if fault.retry_after is not None:
                reply.extra_headers.append((b"retry-after", str(fault.retry_after).encode()))
        return reply

    def _route(self, method: str, path: str, body: bytes, fault: Fault | None) -> Reply:
        path = path.split("?", 1)[0]
        if path == "/api/generate" or path == "/api/chat":
            if method != "POST":
                return Reply(405, TEXT, b"405 method not allowed")
            return self._generate(path == "/api/chat", body, fault)
        if path in _OPENAI_PATHS:
            if method != "POST":
                return Reply(405, TEXT, b"405 method not allowed")
            return self._openai(path, body, fault)
        if path == "/v1/models" and method in ("GET", "HEAD"):
            return Reply(200, JSON, self._openai_models)
        if path == "/api/tags":
            return Reply(200, JSON, self._tags)
        if path == "/api/show":
            if method != "POST":
                return Reply(405, TEXT, b"405 method not allowed")
            return self._show(body)
        if path == "/api/version":
            return Reply(200, JSON, self._version)
        if path == "/" and method in ("GET", "HEAD"):
            return Reply(200, TEXT, b"Ollama is running")
        return Reply(404, TEXT, b"404 page not found")

    def _generate(self, chat: bool, body: bytes, fault: Fault | None) -> Reply:
        start_ns = time.perf_counter_ns()
        req: ChatRequest | GenerateRequest
        try:
            req = _chat_decoder.decode(body) if chat else _gen_decoder.decode(body)
        except DECODE_ERRORS as exc:
            return Reply(400, JSON, error_body(invalid_body(exc)))
        if not req.model:
            return Reply(400, JSON, error_body("model is required"))
        if self.unknown_model(req.model):
            return Reply(404, JSON, error_body(model_not_found(req.model)))
        think = bool(req.think) and req.think not in ("false", "none")
        if isinstance(req, ChatRequest):
            if not req.messages:
                return self._load_reply(req.model, chat)
            context, thinking = model.render_chat(req.messages, think=think)
        elif req.raw:
            if not req.prompt:
                return self._load_reply(req.model, chat)
            context, thinking = req.prompt, False
        else:
            if not req.prompt:
                return self._load_reply(req.model, chat)
            msgs: list[Message] = model.generate_messages(req.prompt, req.system)
            context, thinking = model.render_chat(msgs, think=think)
        options = req.options or {}
        num_predict = options.get("num_predict")
        if num_predict is not None and not isinstance(num_predict, int):
            return Reply(400, JSON, error_body("options.num_predict must be an integer"))
        gen: model.TokenSource
        if req.format is None:
            gen = model.Generation(
                context,
                thinking=thinking,
                num_predict=num_predict,
                stop_probability=self.stop_probability,
                max_tokens=self.settings.max_tokens,
                vocab=self.vocab,
            )
        else:
            structured = format_generation(
                req.format, context, thinking, num_predict, self.settings, self.vocab
            )
            if isinstance(structured, str):
                return Reply(400, JSON, error_body(structured))
            gen = structured
        stream_class = FinalTextLineStream if self.settings.final_chunk_text else LineStream
        lines = stream_class(
            gen,
            chat=chat,
            model_name=req.model,
            prompt_tokens=model.estimate_tokens(context),
            start_ns=start_ns,
            stats=self.stats,
            fault=fault if fault is not None and fault.kind not in BEFORE_HEADERS else None,
        )
        if req.stream:
            return Reply(200, NDJSON, stream=lines)
        return self._whole(lines)

    def _whole(self, lines: LineStream) -> Reply:
        """``stream: false``: generate everything now; the edge waits ``delay`` to answer."""
        gen = lines.gen
        lines._first_token_ns = time.perf_counter_ns()
        text, thinking = model.run(gen)
        think_text = thinking or None
        lines.tokens = gen.count
        self.stats.tokens_generated += gen.count
        final = msgspec.json.decode(lines.final_line())
        if lines.chat:
            final["message"] = _OutMessage(role="assistant", content=text, thinking=think_text)
        else:
            final["response"] = text
            if think_text is not None:
                final["thinking"] = think_text
        st = self.settings
        delay = st.first_token_delay
        if st.tokens_per_second > 0:
            delay += gen.count / st.tokens_per_second
        out = _ChatFinal(**final) if lines.chat else _GenerateFinal(**final)
        return Reply(200, JSON, _encode(out), delay=delay)

    def _openai(self, path: str, body: bytes, fault: Fault | None) -> Reply:
        from resilient_stream.refserver import openai_api  # imports this module

        return openai_api.handle(
            path,
            body,
            fault,
            index=self.stats.requests - 1,
            stats=self.stats,
            settings=self.settings,
            stop_probability=self.stop_probability,
            vocab=self.vocab,
            unknown_model=self.unknown_model,
        )

    def _show(self, body: bytes) -> Reply:
        """``POST /api/show``: what Ollama says about a model (a plausible subset)."""
        try:
            req = _show_decoder.decode(body)
        except DECODE_ERRORS as exc:
            return Reply(400, JSON, error_body(invalid_body(exc)))
        name = req.model or req.name
        if not name:
            return Reply(400, JSON, error_body("model is required"))
        if self.unknown_model(name):
            return Reply(404, JSON, error_body(model_not_found(name)))
        show = _Show(
            modelfile=f"# reference model (resilient_stream.refserver)\nFROM {name}\n",
            parameters="",
            template=_TEMPLATE_DOC,
            details=_ModelDetails(),
            model_info={
                "general.architecture": "reference",
                "general.parameter_count": 0,
                "reference.vocab_size": len(self.vocab.tokens),
            },
            capabilities=["completion", "thinking"],
            modified_at=self.modified_at,
        )
        return Reply(200, JSON, _encode(show))

    def _load_reply(self, model_name: str, chat: bool) -> Reply:
        """Ollama answers an empty prompt/messages by loading the model: one done line."""
        head: dict[str, Any] = {"model": model_name, "created_at": now_iso()}
        if chat:
            head["message"] = {"role": "assistant", "content": ""}
        else:
            head["response"] = ""
        head["done"] = True
        head["done_reason"] = "load"
        return Reply(200, JSON, _encode(head))
