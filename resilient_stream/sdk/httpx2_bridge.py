"""Our transports under SDKs built on ``httpx2`` (pydantic's fork of httpx).

``anthropic`` 1.0+ and ``openai`` 3.x are built on ``httpx2``; ``anthropic`` refuses
an ``httpx`` client outright (a ``TypeError``: "this SDK uses httpx2"). The two
packages have the same transport interface with their own classes, so the bridge
is a thin edge: it turns an ``httpx2.Request`` into an ``httpx.Request`` for the
wrapped transport, its ``httpx.Response`` back into an ``httpx2.Response`` whose
body reads the wrapped body chunk for chunk (no copy, no buffering), and an
``httpx`` error into the ``httpx2`` error of the same name (the original, e.g. an
:class:`~resilient_stream.errors.IncompleteStreamError`, is its ``__cause__``),
which is what the SDK catches to raise its own connection/timeout errors::

    import anthropic, httpx2
    from resilient_stream.sdk import Httpx2Transport

    client = anthropic.AsyncAnthropic(
        http_client=httpx2.AsyncClient(transport=Httpx2Transport())
    )

``Httpx2Transport()`` wraps a new :class:`ResilientTransport`; pass one (or any
``httpx.AsyncBaseTransport``) to configure it. ``Httpx2SyncTransport`` is the sync
twin over :class:`ResilientSyncTransport`. ``httpx2`` is imported here only: the
rest of the library does not need it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn, cast

import httpx

try:
    import httpx2
except ImportError as exc:  # pragma: no cover - exercised only without httpx2
    raise ImportError(
        "resilient_stream.sdk.Httpx2Transport needs the httpx2 package "
        "(pip install httpx2; anthropic>=1 and openai>=3 depend on it)"
    ) from exc

from .sync import ResilientSyncTransport
from .transport import ResilientTransport

__all__ = ["Httpx2SyncTransport", "Httpx2Transport"]


def _error(exc: httpx.HTTPError, request: httpx2.Request | None) -> httpx2.HTTPError:
    """The httpx2 error named like the nearest httpx class of ``exc``."""
    for cls in type(exc).__mro__:
        if cls.__module__.partition(".")[0] != "httpx":
            continue
        twin = getattr(httpx2, cls.__name__, None)
        if isinstance(twin, type) and issubclass(twin, httpx2.RequestError):
            return twin(str(exc), request=request)
    return httpx2.TransportError(str(exc), request=request)


def _raise(exc: httpx.HTTPError, request: httpx2.Request | None) -> NoReturn:
    raise _error(exc, request) from exc


def _request(request: httpx2.Request, upload: bytes | Any) -> httpx.Request:
    """``upload``: the body's bytes when the SDK has read it (its JSON bodies), so the
    wrapped transport can read ``request.content``; else an httpx stream over it."""
    if isinstance(upload, bytes):
        return httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.raw,
            content=upload,
            extensions=request.extensions,
        )
    return httpx.Request(
        request.method,
        str(request.url),
        headers=request.headers.raw,
        stream=upload,
        extensions=request.extensions,
    )


def _response(response: httpx.Response, stream: Any) -> httpx2.Response:
    return httpx2.Response(
        response.status_code,
        headers=response.headers.raw,
        stream=stream,
        extensions=response.extensions,
    )


class _AsyncUpload(httpx.AsyncByteStream):
    """The httpx2 request body, as httpx reads one."""

    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part


class _SyncUpload(httpx.SyncByteStream):
    def __init__(self, stream: httpx2.SyncByteStream) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream


def _async_upload(request: httpx2.Request) -> Any:
    try:
        return request.content  # an SDK's JSON body: read already
    except httpx2.RequestNotRead:
        assert isinstance(request.stream, httpx2.AsyncByteStream)
        return _AsyncUpload(request.stream)


def _sync_upload(request: httpx2.Request) -> Any:
    try:
        return request.content
    except httpx2.RequestNotRead:
        assert isinstance(request.stream, httpx2.SyncByteStream)
        return _SyncUpload(request.stream)


class _AsyncBody(httpx2.AsyncByteStream):
    """The wrapped response body, read chunk for chunk, errors renamed."""

    __slots__ = ("_request", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx2.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except httpx.HTTPError as exc:
            _raise(exc, self._request)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except httpx.HTTPError as exc:
            _raise(exc, self._request)


class _SyncBody(httpx2.SyncByteStream):
    __slots__ = ("_request", "_stream")

    def __init__(self, stream: httpx.SyncByteStream, request: httpx2.Request) -> None:
        self._stream = stream
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except httpx.HTTPError as exc:
            _raise(exc, self._request)

    def close(self) -> None:
        try:
            self._stream.close()
        except httpx.HTTPError as exc:
            _raise(exc, self._request)


class Httpx2Transport(httpx2.AsyncBaseTransport):
    """An ``httpx2.AsyncBaseTransport`` over an httpx one (default: a new
    :class:`ResilientTransport`)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport if transport is not None else ResilientTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self.transport.handle_async_request(
                _request(request, _async_upload(request))
            )
        except httpx.HTTPError as exc:
            _raise(exc, request)
        return _response(
            response, _AsyncBody(cast(httpx.AsyncByteStream, response.stream), request)
        )

    async def aclose(self) -> None:
        await self.transport.aclose()


class Httpx2SyncTransport(httpx2.BaseTransport):
    """An ``httpx2.BaseTransport`` over an httpx one (default: a new
    :class:`ResilientSyncTransport`)."""

    def __init__(self, transport: httpx.BaseTransport | None = None) -> None:
        self.transport = transport if transport is not None else ResilientSyncTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = self.transport.handle_request(_request(request, _sync_upload(request)))
        except httpx.HTTPError as exc:
            _raise(exc, request)
        return _response(response, _SyncBody(cast(httpx.SyncByteStream, response.stream), request))

    def close(self) -> None:
        self.transport.close()
