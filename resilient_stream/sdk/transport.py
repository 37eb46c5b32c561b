"""``ResilientTransport``: resume for any httpx-based SDK, below the SDK.

An :class:`httpx.AsyncBaseTransport` that recognises the streaming calls it
knows from method, path and JSON body (recognise.py):

* Ollama: ``POST .../api/generate`` and ``.../api/chat`` (``stream`` true or absent);
* OpenAI-compatible: ``POST .../v1/chat/completions`` and ``.../v1/completions``
  with ``"stream": true`` (and ``n`` 1 or unset);
* Anthropic: ``POST .../v1/messages`` with ``"stream": true`` (text in one block,
  resumed by assistant prefill; docs/sdk/anthropic.md says what is not).

SDKs built on httpx2 (anthropic 1.0+) take it through the bridge in httpx2_bridge.py.

Pass-through first. The SDK's request goes out as the first attempt (asking for
an identity body); while it holds, the SDK reads the server's bytes, whole
records at a time, and nothing is decoded (passthrough.py). When it breaks, the
machinery of :class:`~resilient_stream.StreamClient` takes over (one client per
base URL, on the wrapped transport: the same planners, verified seams, retry
policy and budgets): it replays the forwarded bytes as its first attempt, resumes,
and the body goes on with the continuation's chunks re-encoded by the format's
encoder (``formats/ollama/``, ``formats/openai/``, ``formats/anthropic/``), with the
first attempt's ``id``/``created``/``model`` on every OpenAI chunk, so the SDK
still sees one role chunk, one id, one final chunk whose usage counts all
attempts and ``[DONE]`` once.

A first attempt that does not answer ``200`` with the format's content type (an
error status, a transport error, a compressed body) goes to the engine as its
first attempt, which retries it or ends: errors before any output reach the SDK
as the server's status with the server's own error body (so the SDK raises its
usual error), or as the typed transport error (a subclass of
``httpx.TransportError``). Everything else passes through to the wrapped
transport untouched. Closing the response early cancels the upstream stream.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..client import StreamClient
from ..config import StreamConfig
from ..errors import HTTPStatusError, IncompleteStreamError, ServerReportedError, StreamError
from ..formats.openai.planner import FLAVORS, Flavor
from ..result import StreamResult
from ..stream import ResilientStream
from ..transport import MultiplexedTransport
from ..transport.within import bounds_headers, send_within
from .assemble import Collector
from .passthrough import PassThrough, Replay
from .recognise import Call, recognise
from .wire import Wire

__all__ = ["ResilientTransport"]

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
_NOT_RETURNED_RAW = frozenset(name.encode("ascii") for name in _NOT_RETURNED)


# --- one logical stream ---------------------------------------------------------------


@dataclass(eq=False)
class _Session:
    """What the engine's transport (the tap) and the body the SDK reads share."""

    #: The SDK's request (its headers go on every attempt: auth, user agent...).
    request: httpx.Request
    requests: int = 0
    #: The first attempt's outcome, made before the engine ran: its first request gets it.
    first: httpx.Response | BaseException | None = None
    #: The engine yields chunks the SDK has not seen yet (past the replayed bytes).
    new: bool = False
    response_headers: httpx.Headers | None = None
    #: The last error answer (status, headers, body as far as it was read).
    error: tuple[int, httpx.Headers, bytearray] | None = None
    #: ``ResilientTransport(on_resumed=...)``: told each engine-carried call's result.
    on_resumed: Callable[[StreamResult], None] | None = None

    _headers: list[tuple[str, str]] | None = None

    def replayed(self) -> None:
        self.new = True

    @property
    def headers(self) -> list[tuple[str, str]]:
        if self._headers is None:
            items = self.request.headers.items()
            self._headers = [(k, v) for k, v in items if k.lower() not in _NOT_FORWARDED]
        return self._headers


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "resilient_stream_sdk_session", default=None
)


class _ErrorCopy(httpx.AsyncByteStream):
    """An error answer's body that also keeps what it reads (for the SDK's error)."""

    def __init__(self, inner: httpx.AsyncByteStream, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self._inner:
            self._sink += data
            yield data

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Tap(httpx.AsyncBaseTransport):
    """The transport of the internal StreamClients: forwards the SDK's headers (auth,
    user agent...), hands the engine the first attempt made before it ran, and keeps
    error answers."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = _SESSION.get()
        if session is None:
            return await self._inner.handle_async_request(request)
        for key, value in session.headers:
            request.headers[key] = value
        session.requests += 1
        if session.requests > 1:
            session.new = True
        first, session.first = session.first, None
        if isinstance(first, BaseException):
            raise first
        response = first if first is not None else await self._inner.handle_async_request(request)
        if response.status_code == 200:
            if session.response_headers is None:
                session.response_headers = response.headers
            return response
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        sink = bytearray()
        session.error = (response.status_code, response.headers, sink)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_ErrorCopy(stream, sink),
            extensions=response.extensions,
        )

    @property
    def bounds_headers(self) -> bool:
        """The wrapped transport bounds the wait for headers itself (transport/within.py)."""
        return bounds_headers(self._inner)

    async def aclose(self) -> None:
        """The wrapped transport is closed by :class:`ResilientTransport`."""


# --- the body the SDK reads ------------------------------------------------------------


async def _engine_chunks(
    stream: ResilientStream[Any],
    session: _Session,
    wire: Wire,
    first: Any = None,
    delivered: int = 0,
) -> AsyncGenerator[bytes, None]:
    """The engine's chunks, re-encoded, past those the SDK saw as the server's bytes.

    How it ends is what an SDK reading the server would see: a permanent error the
    server named goes to the SDK as the server's error record, then the body ends (the
    SDK raises its own error); a give-up is an ``httpx.RemoteProtocolError``
    (:class:`~resilient_stream.errors.IncompleteStreamError`, the give-up its cause).
    ``delivered``: the body bytes the SDK got before these."""
    if first is not None:
        out = wire.encode(first)
        delivered += len(out)
        yield out
    while True:
        failure: StreamError | None = None
        token = _SESSION.set(session)
        try:
            chunk = await stream.__anext__()
        except StopAsyncIteration:
            _tell(session, stream)
            return
        except StreamError as exc:
            failure = exc
        finally:
            _SESSION.reset(token)
        if failure is not None:
            _tell(session, stream)
            if _permanent_server_error(failure):
                assert isinstance(failure, ServerReportedError)
                yield wire.error_record(failure.error)
                return
            if isinstance(failure, httpx.HTTPError):
                raise failure  # already an httpx error (a typed transport error)
            raise IncompleteStreamError(failure, delivered=delivered) from failure
        if session.new:
            out = wire.encode(chunk)
            delivered += len(out)
            yield out
        else:
            wire.remember(chunk)


def _tell(session: _Session, stream: ResilientStream[Any]) -> None:
    """The engine is done with the call: its result to ``on_resumed`` (seams, whether
    each verified: what an SDK has no field for)."""
    if session.on_resumed is not None:
        session.on_resumed(stream.result)


def _permanent_server_error(exc: BaseException) -> bool:
    """An error the server named that is not resumed (a bad request)."""
    return isinstance(exc, ServerReportedError) and not exc.retryable


class _Body(httpx.AsyncByteStream):
    """The body the SDK reads: the server's bytes, then (after a failure) the engine's.

    ``__aiter__`` hands httpx the pass-through's generator itself (one ``__anext__``
    per read between the SDK and the wrapped transport's body: every level costs per
    read)."""

    def __init__(
        self,
        owner: ResilientTransport,
        call: Call,
        session: _Session,
        wire: Wire,
        response: httpx.Response | None,
        stream: ResilientStream[Any] | None = None,
        first: Any = None,
    ) -> None:
        self._owner = owner
        self._call = call
        self._session = session
        self._wire = wire
        self._response = response
        self._stream = stream
        self._first = first
        self._gen: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._gen is None:
            response = self._response
            if response is None:
                assert self._stream is not None
                first, self._first = self._first, None
                self._gen = _engine_chunks(self._stream, self._session, self._wire, first)
            else:
                self._gen = PassThrough(
                    response,
                    self._wire,
                    self._owner.config,
                    token_limit=self._call.planner.token_limit,
                    endpoint=self._call.base,
                    then=self._resume,
                ).body()
        return self._gen

    def _resume(self, passed: PassThrough) -> AsyncGenerator[bytes, None]:
        """The first attempt broke: the engine replays it, resumes, and goes on."""
        response, self._response = self._response, None
        assert response is not None
        session = self._session
        kept = [(k, v) for k, v in response.headers.multi_items() if k != "content-length"]
        session.first = httpx.Response(200, headers=kept, stream=Replay(passed, session.replayed))
        self._stream = stream = self._owner.open_stream(self._call)
        delivered = sum(map(len, passed.forwarded))
        return _engine_chunks(stream, session, self._wire, delivered=delivered)

    async def aclose(self) -> None:
        """Stop: the upstream request is cancelled (RST_STREAM on HTTP/2)."""
        gen, self._gen = self._gen, None
        response, self._response = self._response, None
        if gen is not None:
            await gen.aclose()
        if response is not None:
            await response.aclose()
        if self._stream is not None:
            await self._stream.aclose()


# --- the transport -----------------------------------------------------------------------


class ResilientTransport(httpx.AsyncBaseTransport):
    """Resumes the streaming calls it recognises; passes everything else through.

    ``transport``: what the attempts and the pass-through requests go over
    (default: a :class:`~resilient_stream.transport.MultiplexedTransport`).
    ``config``: the :class:`~resilient_stream.StreamConfig` of the resumed streams
    (default: ``StreamConfig.load()``). ``openai_flavor``: how the OpenAI-compatible
    server continues an assistant prefill (docs/openai.md). ``upgrade_non_streaming``:
    non-streaming calls of the recognised kinds are streamed (and resumed) and
    answered with the one JSON body the SDK expects (False: they pass through).
    ``on_resumed``: called with the :class:`~resilient_stream.StreamResult` of every
    recognised call the resume engine carried (each that broke, was retried or was
    upgraded; one that passed through unbroken is the server's own bytes), when its
    body ends, on the transport's event loop. It is where an SDK user sees what the
    SDK has no field for: ``result.verified`` False means a seam was flagged (the
    text after it may differ from an unbroken run; ``StreamConfig(on_divergence=
    "raise")`` makes that the SDK's connection error instead). It must not raise.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        config: StreamConfig | None = None,
        openai_flavor: Flavor = "generic",
        upgrade_non_streaming: bool = True,
        on_resumed: Callable[[StreamResult], None] | None = None,
    ) -> None:
        if openai_flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {openai_flavor!r}; one of {sorted(FLAVORS)}")
        self.config = config if config is not None else StreamConfig.load()
        self._inner = transport if transport is not None else MultiplexedTransport(self.config)
        self._tap = _Tap(self._inner)
        self._flavor: Flavor = openai_flavor
        self._upgrade = upgrade_non_streaming
        self._on_resumed = on_resumed
        self._clients: dict[str, StreamClient] = {}
        self._timeout = httpx.Timeout(
            connect=self.config.connect_timeout,
            read=None,  # stalls are watched per stream
            write=self.config.idle_timeout,
            pool=self.config.pool_timeout,
        ).as_dict()

    def client_for(self, base: str) -> StreamClient:
        """The internal StreamClient of one base URL (its replica health and budgets)."""
        client = self._clients.get(base)
        if client is None:
            client = self._clients[base] = StreamClient(
                base, transport=self._tap, config=self.config
            )
        return client

    def open_stream(self, call: Call) -> ResilientStream[Any]:
        return self.client_for(call.base).open_stream(call.planner, call.caller_type)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return await self._inner.handle_async_request(request)
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        call = recognise(request, body, self._flavor, upgrade=self._upgrade)
        if call is None:
            return await self._inner.handle_async_request(request)
        if call.upgraded:
            return await self._assembled(request, call)
        return await self._resilient(request, call)

    async def _resilient(self, request: httpx.Request, call: Call) -> httpx.Response:
        session = _Session(request, on_resumed=self._on_resumed)
        wire = call.wire()
        first = await self._first_attempt(_first_request(request, call))
        out = _passed_headers(first, wire) if isinstance(first, httpx.Response) else None
        if out is not None:
            assert isinstance(first, httpx.Response)
            passing = _Body(self, call, session, wire, first)
            return httpx.Response(200, headers=out, stream=passing, request=request)
        session.first = first  # the engine's first attempt: retried, resumed or raised
        return await self._engine(request, call, session, wire)

    async def _first_attempt(self, request: httpx.Request) -> httpx.Response | BaseException:
        """The SDK's own request (asking for an identity body, with the engine's timeouts:
        stalls are watched per stream), its headers within first_token_timeout."""
        request.headers["accept-encoding"] = "identity"
        request.extensions = {**request.extensions, "timeout": self._timeout}
        try:
            # on our transport the bound is a deadline on its timing wheel, not an
            # asyncio timer per request (transport/within.py)
            return await send_within(self._inner, request, self.config.first_token_timeout)
        except (httpx.TransportError, StreamError, OSError, TimeoutError) as exc:
            return exc

    async def _engine(
        self, request: httpx.Request, call: Call, session: _Session, wire: Wire
    ) -> httpx.Response:
        """The engine from the first attempt on: the response once the first chunk came."""
        stream = self.open_stream(call)
        token = _SESSION.set(session)
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except StreamError as exc:
            await stream.aclose()
            if _permanent_server_error(exc) and session.response_headers is not None:
                # a 200 whose first record is the error: the SDK reads it as it was sent
                assert isinstance(exc, ServerReportedError)
                out = _out_headers(session.response_headers, wire)
                line = wire.error_record(exc.error)
                return httpx.Response(200, headers=out, content=line, request=request)
            return _error_response(exc, session, wire, request)
        except BaseException:
            await stream.aclose()
            raise
        finally:
            _SESSION.reset(token)
        session.new = True  # nothing was passed through: every chunk is encoded
        out = _out_headers(session.response_headers or httpx.Headers(), wire)
        body: httpx.AsyncByteStream
        if first is None:
            body = httpx.ByteStream(b"")
        else:
            body = _Body(self, call, session, wire, None, stream, first)
        return httpx.Response(200, headers=out, stream=body, request=request)

    async def _assembled(self, request: httpx.Request, call: Call) -> httpx.Response:
        """A non-streaming call, streamed and resumed; the SDK gets one JSON body."""
        session = _Session(request, on_resumed=self._on_resumed)
        wire = call.wire()
        collector = Collector(call.caller_type)
        stream = self.open_stream(call)
        token = _SESSION.set(session)
        try:
            async for chunk in stream:
                collector.add(chunk)
        except StreamError as exc:
            if collector.chunks:
                # after output: nothing partial can be a JSON body; an httpx error, as
                # when the SDK's own body read breaks
                if isinstance(exc, httpx.HTTPError):
                    raise
                raise IncompleteStreamError(exc, delivered=0) from exc
            return _error_response(exc, session, wire, request)
        finally:
            _SESSION.reset(token)
            await stream.aclose()
            _tell(session, stream)
        headers = [
            (k, v)
            for k, v in (session.response_headers or httpx.Headers()).multi_items()
            if k.lower() not in _NOT_RETURNED and k.lower() != "content-type"
        ]
        headers.append(("content-type", "application/json"))
        return httpx.Response(200, headers=headers, content=collector.body(), request=request)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        await self._inner.aclose()


def _first_request(request: httpx.Request, call: Call) -> httpx.Request:
    """The SDK's request, or the same one with the body the call's first attempt needs."""
    if call.first_body is None:
        return request
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        content=call.first_body,
        extensions=request.extensions,
    )


def _passed_headers(response: httpx.Response, wire: Wire) -> list[tuple[bytes, bytes]] | None:
    """The headers the SDK gets with a first answer it may read as it is (200, this
    format, not compressed); None for any other answer."""
    if response.status_code != 200:
        return None
    out, content_type, identity = _returned(response.headers, wire)
    if not identity or not wire.accepts(content_type.decode("latin-1").lower()):
        return None
    return out


def _out_headers(headers: httpx.Headers, wire: Wire) -> list[tuple[bytes, bytes]]:
    return _returned(headers, wire)[0]


def _returned(headers: httpx.Headers, wire: Wire) -> tuple[list[tuple[bytes, bytes]], bytes, bool]:
    """The headers the SDK gets (those that describe the upstream body dropped, the
    format's content type added if there is none), the content type as sent, and
    whether the body is identity-encoded.

    One pass over the raw header list: ``Headers.get`` decodes every name and value of
    a fresh header list to find its encoding first (about 2 us a response)."""
    out: list[tuple[bytes, bytes]] = []
    content_type = b""
    identity = True
    for key, value in headers.raw:
        name = key.lower()
        if name == b"content-type":
            content_type = value if not content_type else content_type + b", " + value
        elif name == b"content-encoding":
            identity = identity and value.lower() == b"identity"
        if name not in _NOT_RETURNED_RAW:
            out.append((key, value))
    if not content_type:
        out.append((b"content-type", wire.content_type.encode("ascii")))
    return out, content_type, identity


def _error_response(
    exc: StreamError, session: _Session, wire: Wire, request: httpx.Request
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
        content=wire.error_body(status_exc.status_code, status_exc.body),
        request=request,
    )
