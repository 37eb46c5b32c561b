"""Request -> response logic of the reference server, shared by HTTP/1.1 and HTTP/2.

Sans-I/O: :class:`Handler` turns (method, path, body) into a
:class:`~resilient_stream.refserver.replies.Reply`; a streaming reply carries a
:class:`~resilient_stream.refserver.replies.LineStream` spelled by
:class:`NdjsonLines` (``/api/*``) or by ``openai_api``'s SSE format (``/v1/*``).
The protocol edges only move bytes and keep time.

What goes on the wire is Ollama's schema as the client declares it
(``formats/ollama/types.py``), written by its encoder (``formats/ollama/encoder.py``).
Token lines are spliced from the encoder's affixes (the model name and timestamp
encoded once per stream), so a line costs a few concatenations, no dict and no
encoder call.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from resilient_stream.formats import ndjson
from resilient_stream.formats.ollama import encoder
from resilient_stream.formats.ollama.encoder import error_body
from resilient_stream.formats.ollama.types import (
    ChatChunk,
    ChatRequest,
    GenerateChunk,
    GenerateRequest,
    Message,
)
from resilient_stream.refserver import anthropic_api, model, openai_api
from resilient_stream.refserver.faults import BEFORE_HEADERS, Fault, RequestInfo
from resilient_stream.refserver.injection import ON_THE_BODY
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

NDJSON = ndjson.MEDIA_TYPE.encode()


# --- wire structs of /api/tags and /api/show ------------------------------------


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


def now_iso() -> str:
    """Ollama's ``created_at`` format: RFC 3339 with microseconds and ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: ``/api/show``'s ``template``: the reference model's chat template, in words.
_TEMPLATE_DOC = (
    "{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"
)

# --- NDJSON lines ----------------------------------------------------------------


class NdjsonLines:
    """Ollama's spelling of a stream's lines (a :class:`LineFormat`): one JSON object
    per line, the ``done: true`` line with its metrics last."""

    __slots__ = (
        "_counted",
        "chat",
        "content_prefix",
        "counts",
        "created_at",
        "model_name",
        "opening",
        "suffix",
        "think_prefix",
    )

    def __init__(self, *, chat: bool, model_name: str, counts: bool = False) -> None:
        self.chat = chat
        self.counts = counts
        self.model_name = model_name
        self.created_at = now_iso()
        self.content_prefix, self.suffix = encoder.text_affixes(
            model_name, self.created_at, chat=chat
        )
        self.think_prefix, _ = encoder.text_affixes(
            model_name, self.created_at, chat=chat, thinking=True
        )
        self.opening = b""
        #: The token line's end with a running ``eval_count`` (``report_tokens``).
        self._counted = b'},"done":false,"eval_count":' if chat else b',"done":false,"eval_count":'

    def counted_suffix(self, tokens: int) -> bytes:
        return self._counted + str(tokens).encode() + b"}\n" if self.counts else b""

    def final_line(self, lines: LineStream, text: str) -> bytes:
        now = time.perf_counter_ns()
        first = lines.first_token_ns or now
        common: dict[str, Any] = {
            "model": self.model_name,
            "created_at": self.created_at,
            "done": True,
            "done_reason": lines.gen.done_reason or "stop",
            "total_duration": now - lines.start_ns,
            "load_duration": lines.stream_start_ns - lines.start_ns,
            "prompt_eval_count": lines.prompt_tokens,
            "prompt_eval_duration": first - lines.stream_start_ns,
            "eval_count": lines.tokens,
            "eval_duration": now - first,
        }
        if self.chat:
            message = Message(role="assistant", content=text)
            return encoder.encode_line(ChatChunk(message=message, **common))
        return encoder.encode_line(GenerateChunk(response=text, **common))

    def error_line(self, message: str) -> bytes:
        return encoder.error_line(message)


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
        elif fault is not None and reply.stream is None and fault.kind in ON_THE_BODY:
            if fault.kind == "error_line":
                reply.status, reply.body = 500, error_body(fault.message)
            else:  # truncate, truncate_line: a short body
                reply.promised_length = len(reply.body)
                reply.body = reply.body[: len(reply.body) // 2]
        return reply

    def _route(self, method: str, path: str, body: bytes, fault: Fault | None) -> Reply:
        path = path.split("?", 1)[0]
        if path == "/api/generate" or path == "/api/chat":
            if method != "POST":
                return Reply(405, TEXT, b"405 method not allowed")
            return self._generate(path == "/api/chat", body, fault)
        if path in openai_api.PATHS:
            if method != "POST":
                return Reply(405, TEXT, b"405 method not allowed")
            return self._openai(path, body, fault)
        if path in anthropic_api.PATHS:
            if method != "POST":
                return Reply(405, TEXT, b"405 method not allowed")
            return anthropic_api.handle(
                body,
                fault,
                index=self.stats.requests - 1,
                stats=self.stats,
                settings=self.settings,
                stop_probability=self.stop_probability,
                vocab=self.vocab,
                unknown_model=self.unknown_model,
            )
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
        counts = self.settings.report_tokens
        lines = stream_class(
            self.settings.final_chunk_text, self.settings.tokens_per_chunk, counts
        )(
            gen,
            NdjsonLines(chat=chat, model_name=req.model, counts=counts),
            prompt_tokens=model.estimate_tokens(context),
            start_ns=start_ns,
            stats=self.stats,
            fault=fault if fault is not None and fault.kind not in BEFORE_HEADERS else None,
        )
        if req.stream:
            return Reply(200, NDJSON, stream=lines)
        return self._whole(lines, chat)

    def _whole(self, lines: LineStream, chat: bool) -> Reply:
        """``stream: false``: generate everything now; the edge waits ``delay`` to answer."""
        gen = lines.gen
        lines.first_token_ns = time.perf_counter_ns()
        text, thinking = model.run(gen)
        think_text = thinking or None
        lines.tokens = gen.count
        self.stats.tokens_generated += gen.count
        final: ChatChunk | GenerateChunk
        if chat:
            final = msgspec.json.decode(lines.final_line(), type=ChatChunk)
            message = Message(role="assistant", content=text, thinking=think_text)
            final = msgspec.structs.replace(final, message=message)
        else:
            final = msgspec.json.decode(lines.final_line(), type=GenerateChunk)
            final = msgspec.structs.replace(final, response=text, thinking=think_text)
        st = self.settings
        delay = st.first_token_delay
        if st.tokens_per_second > 0:
            delay += gen.count / st.tokens_per_second
        return Reply(200, JSON, encoder.encode_chunk(final), delay=delay)

    def _openai(self, path: str, body: bytes, fault: Fault | None) -> Reply:
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
        head: dict[str, Any] = {
            "model": model_name,
            "created_at": now_iso(),
            "done": True,
            "done_reason": "load",
        }
        loaded: ChatChunk | GenerateChunk
        if chat:
            loaded = ChatChunk(message=Message(role="assistant"), **head)
        else:
            loaded = GenerateChunk(**head)
        return Reply(200, JSON, encoder.encode_chunk(loaded))
