"""``ResilientTransport``: resume for any httpx-based SDK, below the SDK.

An :class:`httpx.AsyncBaseTransport` that recognises the streaming calls it
knows from method, path and JSON body:

* Ollama: ``POST .../api/generate`` and ``.../api/chat`` (``stream`` true or absent);
* OpenAI-compatible: ``POST .../v1/chat/completions`` and ``.../v1/completions``
  with ``"stream": true`` (and ``n`` 1 or unset).

For such a call it runs the machinery of :class:`~resilient_stream.StreamClient`
(one client per base URL, on the wrapped transport: the same planners, verified
seams, retry policy and budgets) and answers with one ``200`` response whose body
the SDK reads as it would read the server's, spliced from every attempt.

Pass-through first: while the first attempt is unbroken, the body is the
server's bytes, untouched (forwarded record by record, once the stream has
decoded and delivered each record). Only when a second request is made (a
retry or a resume) does the body switch to re-encoding the delivered chunks
with the format's encoder (``formats/ollama/encoder.py``,
``formats/openai/encoder.py``), with the first attempt's ``id``/``created``/
``model`` on every OpenAI chunk, so the SDK still sees one role chunk, one id,
one final chunk whose usage counts all attempts and ``[DONE]`` once.

Errors before any output: a server's error status reaches the SDK as that
status with the server's own error body (so the SDK raises its usual error);
a transport failure is raised as the typed error (a subclass of
``httpx.TransportError``). Everything else passes through to the wrapped
transport untouched. Closing the response early cancels the upstream stream.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from ..client import StreamClient
from ..config import StreamConfig
from ..errors import HTTPStatusError, StreamError
from ..formats import adapter_for
from ..formats.ollama import encoder as ollama_encoder
from ..formats.ollama.planner import ResumePlanner
from ..formats.ollama.types import ChatRequest, GenerateRequest, Message
from ..formats.openai import encoder as openai_encoder
from ..formats.openai.framing import held_back as _sse_record_held
from ..formats.openai.planner import CHAT_PATH, COMPLETION_PATH, FLAVORS, Flavor, OpenAIPlanner
from ..formats.openai.types import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    CompletionChunk,
    CompletionRequest,
    ErrorInfo,
)
from ..formats.plan import Planner
from ..stream import ResilientStream
from ..transport import MultiplexedTransport

__all__ = ["ResilientTransport"]

_OLLAMA_PATHS = {"/api/generate": GenerateRequest, "/api/chat": ChatRequest}
_OPENAI_PATHS = {CHAT_PATH: ChatCompletionRequest, COMPLETION_PATH: CompletionRequest}

#: Request headers of the SDK that the attempts do not take over (ours, or per body).
_NOT_FORWARDED = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "accept-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
    }
)
#: Response headers that describe the upstream body, not the one the SDK reads.
_NOT_RETURNED = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}
)


# --- one logical stream ---------------------------------------------------------------


@dataclass(eq=False)
class _Session:
    """What the tap and the spliced body share for one recognised call."""

    headers: list[tuple[str, str]]
    requests: int = 0
    #: The first attempt's bytes are still the body (no second request yet).
    passing: bool = True
    #: Bytes of the first attempt not yet forwarded to the SDK.
    raw: bytearray = field(default_factory=bytearray)
    response_headers: httpx.Headers | None = None
    #: The last error answer (status, headers, body as far as it was read).
    error: tuple[int, httpx.Headers, bytearray] | None = None


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "resilient_stream_sdk_session", default=None
)


class _TapStream(httpx.AsyncByteStream):
    """A response body that also copies what it reads into ``sink``."""

    def __init__(self, inner: httpx.AsyncByteStream, sink: bytearray, session: _Session) -> None:
        self._inner = inner
        self._sink = sink
        self._session = session
        self._it: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._it = self._inner.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        assert self._it is not None
        data = await self._it.__anext__()
        if self._session.passing or self._sink is not self._session.raw:
            self._sink += data
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Tap(httpx.AsyncBaseTransport):
    """The transport of the internal StreamClients: forwards the SDK's headers (auth,
    user agent...) and copies the first attempt's body for pass-through."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = _SESSION.get()
        if session is None:
            return await self._inner.handle_async_request(request)
        for key, value in session.headers:
            request.headers[key] = value
        session.requests += 1
        first = session.requests == 1
        if not first and session.passing:
            session.passing = False
            session.raw.clear()
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        if response.status_code == 200:
            if not first:
                return response
            session.response_headers = response.headers
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                session.passing = False  # the stream inflates: re-encode from the start
                return response
            sink = session.raw
        else:
            sink = bytearray()
            session.error = (response.status_code, response.headers, sink)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_TapStream(stream, sink, session),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        """The wrapped transport is closed by :class:`ResilientTransport`."""


# --- the wire formats ---------------------------------------------------------------

_NDJSON_DONE = re.compile(rb'"done"\s*:\s*true')
_ERROR_KEY = re.compile(rb'"error"\s*:')
_SSE_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_SSE_FINISH = re.compile(rb'"finish_reason"\s*:\s*"')


class _Format:
    """How one wire format's raw body is forwarded and its chunks re-encoded."""

    content_type = ""

    def flushable(self, raw: bytearray) -> int:
        """Bytes at the start of ``raw`` the stream has surely decoded and delivered."""
        raise NotImplementedError

    def done_end(self, raw: bytearray) -> int:
        """The end of the record that ends the stream (-1: not in ``raw``)."""
        raise NotImplementedError

    def encode(self, chunk: Any) -> bytes:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> bytes:
        raise NotImplementedError


class _Ndjson(_Format):
    content_type = "application/x-ndjson"

    def flushable(self, raw: bytearray) -> int:
        # every whole line up to the final one or an error line (never flushed early)
        end, start = 0, 0
        while (nl := raw.find(b"\n", start)) >= 0:
            line = raw[start:nl]
            if _NDJSON_DONE.search(line) or _ERROR_KEY.search(line):
                break
            end = start = nl + 1
        return end

    def done_end(self, raw: bytearray) -> int:
        start = 0
        while (nl := raw.find(b"\n", start)) >= 0:
            if _NDJSON_DONE.search(raw, start, nl):
                return nl + 1
            start = nl + 1
        return -1

    def encode(self, chunk: Any) -> bytes:
        return ollama_encoder.encode_line(chunk)

    def error_body(self, status: int, message: str) -> bytes:
        return ollama_encoder.error_body(message)


def _sse_data(block: bytes) -> bytes | None:
    """The ``data`` of one raw SSE event (None: a comment or an event without data)."""
    if block.startswith(b"data: ") and b"\n" not in block and b"\r" not in block:
        return block[6:]
    lines = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    data = [ln[6:] if ln[5:6] == b" " else ln[5:] for ln in lines if ln.startswith(b"data:")]
    return b"\n".join(data) if data else None


class _Sse(_Format):
    content_type = "text/event-stream"

    def __init__(self) -> None:
        self.id: tuple[str, int, str, str | None] | None = None

    def flushable(self, raw: bytearray) -> int:
        # up to the last event with text (what the framer hands over at once; the
        # text-less ones before it go with it), never past a finish, an error or [DONE]
        if b"[DONE]" not in raw and b'"error"' not in raw and not _SSE_FINISH.search(raw):
            # no event can stop it (the steady state): the last event with text wins
            ends = [m.end() for m in _SSE_END.finditer(raw)]
            for i in range(len(ends) - 1, -1, -1):
                data = _sse_data(bytes(raw[ends[i - 1] if i else 0 : ends[i]]).rstrip(b"\r\n"))
                if data is not None and not _sse_record_held(data):
                    return ends[i]
            return 0
        end, start = 0, 0
        for m in _SSE_END.finditer(raw):
            data = _sse_data(bytes(raw[start : m.start()]))
            start = m.end()
            if data is None:
                continue
            if data == b"[DONE]" or _SSE_FINISH.search(data) or _ERROR_KEY.search(data):
                break
            if not _sse_record_held(data):
                end = start
        return end

    def done_end(self, raw: bytearray) -> int:
        start = 0
        for m in _SSE_END.finditer(raw):
            if _sse_data(bytes(raw[start : m.start()])) == b"[DONE]":
                return m.end()
            start = m.end()
        return -1

    def remember(self, chunk: ChatCompletionChunk | CompletionChunk) -> None:
        if self.id is None and chunk.id:
            self.id = (chunk.id, chunk.created, chunk.model, chunk.system_fingerprint)

    def encode(self, chunk: Any) -> bytes:
        self.remember(chunk)
        if self.id is not None:
            id, created, model, fingerprint = self.id
            chunk = msgspec.structs.replace(
                chunk,
                id=id,
                created=created,
                model=model,
                system_fingerprint=fingerprint
                if fingerprint is not None
                else chunk.system_fingerprint,
            )
        if chunk.done:
            return openai_encoder.encode_events([chunk])
        return openai_encoder.encode_event(chunk)

    def error_body(self, status: int, message: str) -> bytes:
        kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
        return openai_encoder.encode_error(ErrorInfo(message=message, type=kind))


# --- the body the SDK reads ------------------------------------------------------------


class _SplicedBody(httpx.AsyncByteStream):
    """The first attempt's bytes while it holds; the re-encoded chunks after a resume."""

    def __init__(
        self,
        stream: ResilientStream[Any],
        caller_type: type[Any],
        session: _Session,
        fmt: _Format,
        first: Any,
    ) -> None:
        self._stream = stream
        self._session = session
        self._fmt = fmt
        self._first = first
        self._adapter = adapter_for(caller_type)
        self._passing = True
        self._scanned = -1  # len(session.raw) after the last scan

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending, self._first = self._first, None
        stream, session = self._stream, self._session
        while True:
            if pending is None:
                token = _SESSION.set(session)
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    _SESSION.reset(token)
            else:
                chunk, pending = pending, None
            out = self._emit(chunk)
            if out:
                yield out

    def _emit(self, chunk: Any) -> bytes:
        fmt, session = self._fmt, self._session
        if self._passing and session.passing:
            if isinstance(fmt, _Sse):
                fmt.remember(chunk)
            raw = session.raw
            if self._adapter.is_done(chunk):
                end = fmt.done_end(raw)
                if end >= 0:
                    out = bytes(raw[:end])
                    raw.clear()
                    self._passing = False  # the stream is over
                    return out
                # a final chunk made locally (the token budget ran out): encode it
            else:
                if len(raw) == self._scanned:
                    return b""  # no new bytes since the last scan (several chunks per read)
                end = fmt.flushable(raw)
                out = bytes(raw[:end])
                del raw[:end]
                self._scanned = len(raw)
                return out
        self._passing = False
        return fmt.encode(chunk)

    async def aclose(self) -> None:
        await self._stream.aclose()


# --- recognising a call ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    base: str
    planner: Planner
    caller_type: type[Any]
    fmt: type[_Format]


def _recognise(request: httpx.Request, body: bytes, flavor: Flavor) -> _Call | None:
    if request.method != "POST" or request.url.query:
        return None
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        return None
    path = request.url.path
    found = [
        (s, t) for s, t in (*_OLLAMA_PATHS.items(), *_OPENAI_PATHS.items()) if path.endswith(s)
    ]
    if not found:
        return None
    suffix, tp = found[0]
    try:
        fields = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(fields, dict):
        return None
    base = str(request.url.copy_with(path=path[: -len(suffix)] or "/", query=None)).rstrip("/")
    if tp in (GenerateRequest, ChatRequest):
        return _ollama_call(base, tp, fields)
    return _openai_call(base, tp, fields, flavor)


def _ollama_call(base: str, tp: type[Any], fields: dict[str, Any]) -> _Call | None:
    if fields.get("stream", True) is not True:
        return None  # stream: false (upgrading it is not done yet)
    messages = fields.get("messages")
    if tp is ChatRequest and not _known_messages(messages, Message.__struct_fields__):
        return None
    try:
        request = msgspec.convert(fields, tp)  # forbid_unknown_fields: unknown ones pass through
    except msgspec.ValidationError:
        return None
    planner = ResumePlanner(request)
    return _Call(base, planner, planner.caller_chunk_type, _Ndjson)


def _openai_call(base: str, tp: type[Any], fields: dict[str, Any], flavor: Flavor) -> _Call | None:
    if fields.get("stream") is not True or fields.get("n", 1) not in (1, None):
        return None
    best_of = fields.get("best_of")
    if isinstance(best_of, int) and best_of > 1:
        return None
    if tp is ChatCompletionRequest and not _known_messages(
        fields.get("messages"), ChatMessage.__struct_fields__
    ):
        return None
    known = tp.__struct_fields__
    unknown = {k: v for k, v in fields.items() if k not in known}
    if unknown:
        fields = {k: v for k, v in fields.items() if k in known}
        fields["extra_body"] = {**unknown, **(fields.get("extra_body") or {})}
    try:
        request = msgspec.convert(fields, tp)
    except msgspec.ValidationError:
        return None
    planner = OpenAIPlanner(request, flavor=flavor)
    return _Call(base, planner, planner.caller_chunk_type, _Sse)


def _known_messages(messages: Any, known: tuple[str, ...]) -> bool:
    if not isinstance(messages, list):
        return False
    return all(isinstance(m, dict) and all(k in known for k in m) for m in messages)


# --- the transport -----------------------------------------------------------------------


class ResilientTransport(httpx.AsyncBaseTransport):
    """Resumes the streaming calls it recognises; passes everything else through.

    ``transport``: what the attempts and the pass-through requests go over
    (default: a :class:`~resilient_stream.transport.MultiplexedTransport`).
    ``config``: the :class:`~resilient_stream.StreamConfig` of the resumed streams
    (default: ``StreamConfig.load()``). ``openai_flavor``: how the OpenAI-compatible
    server continues an assistant prefill (docs/openai.md).
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        config: StreamConfig | None = None,
        openai_flavor: Flavor = "generic",
    ) -> None:
        if openai_flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {openai_flavor!r}; one of {sorted(FLAVORS)}")
        self.config = config if config is not None else StreamConfig.load()
        self._inner = transport if transport is not None else MultiplexedTransport(self.config)
        self._tap = _Tap(self._inner)
        self._flavor: Flavor = openai_flavor
        self._clients: dict[str, StreamClient] = {}

    def client_for(self, base: str) -> StreamClient:
        """The internal StreamClient of one base URL (its replica health and budgets)."""
        client = self._clients.get(base)
        if client is None:
            client = self._clients[base] = StreamClient(
                base, transport=self._tap, config=self.config
            )
        return client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return await self._inner.handle_async_request(request)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        call = _recognise(request, body, self._flavor)
        if call is None:
            return await self._inner.handle_async_request(request)
        return await self._resilient(request, call)

    async def _resilient(self, request: httpx.Request, call: _Call) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED]
        session = _Session(headers)
        stream = self.client_for(call.base).open_stream(call.planner, call.caller_type)
        fmt = call.fmt()
        token = _SESSION.set(session)
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except StreamError as exc:
            await stream.aclose()
            return _error_response(exc, session, fmt, request)
        except BaseException:
            await stream.aclose()
            raise
        finally:
            _SESSION.reset(token)
        out_headers = [
            (k, v)
            for k, v in (session.response_headers or httpx.Headers()).multi_items()
            if k.lower() not in _NOT_RETURNED
        ]
        if not any(k.lower() == "content-type" for k, _ in out_headers):
            out_headers.append(("content-type", fmt.content_type))
        body: httpx.AsyncByteStream
        if first is None:
            body = httpx.ByteStream(bytes(session.raw))
        else:
            body = _SplicedBody(stream, call.caller_type, session, fmt, first)
        return httpx.Response(200, headers=out_headers, stream=body, request=request)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        await self._inner.aclose()


def _error_response(
    exc: StreamError, session: _Session, fmt: _Format, request: httpx.Request
) -> httpx.Response:
    """An error before any output, as the SDK expects it: the server's error answer
    (status and body) when there was one, else the typed error raised."""
    status_exc = exc if isinstance(exc, HTTPStatusError) else None
    cause: BaseException | None = exc
    while status_exc is None and cause is not None:
        cause = cause.__cause__
        if isinstance(cause, HTTPStatusError):
            status_exc = cause
    if isinstance(exc, httpx.TransportError):
        raise exc
    if status_exc is None:
        # A give-up (attempts, budget, deadline) whose last cause is a transport error
        # reaches the SDK as that error (its own connection error), the give-up attached.
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, httpx.TransportError):
            cause = cause.__cause__
        if cause is None:
            raise exc
        cause.add_note(f"resilient_stream: {exc}")
        raise cause from exc
    error = session.error
    if error is not None and error[0] == status_exc.status_code and error[2]:
        status, headers, body = error
        kept = [(k, v) for k, v in headers.multi_items() if k.lower() not in _NOT_RETURNED]
        return httpx.Response(status, headers=kept, content=bytes(body), request=request)
    return httpx.Response(
        status_exc.status_code,
        headers={"content-type": "application/json"},
        content=fmt.error_body(status_exc.status_code, status_exc.body),
        request=request,
    )
