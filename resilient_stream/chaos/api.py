"""A REST API compatible with toxiproxy's, on asyncio + h11, loopback only.

Routes (toxiproxy's, same JSON shapes): GET /version, POST /reset,
GET/POST /proxies, POST /populate, GET/POST/DELETE /proxies/{name},
GET/POST /proxies/{name}/toxics, GET/POST/DELETE /proxies/{name}/toxics/{toxic};
plus GET /proxies/{name}/faults (our extension: the fault records).

Only local programs may drive it: :func:`refusal` turns away what a web page
can make a browser send (a browser user agent, as toxiproxy does; a Host or
Origin that is not loopback, as a DNS-rebinding page sends; a "simple" POST
body that is not JSON).

:class:`ProxyRegistry` is the logic (method, path, body -> status, JSON);
:class:`ApiServer` is the thin h11 socket edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence
from typing import Any, NamedTuple

import h11
import msgspec

from .proxy import ChaosProxy, ToxicExistsError, ToxicNotFoundError, split_hostport
from .spec import known_attributes
from .toxic import ChaosError, InvalidToxicError


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("resilient-stream")
    except PackageNotFoundError:
        return "dev"


VERSION = f"resilient-stream {_package_version()} (toxiproxy API 2)"
MAX_BODY = 1 << 20


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ProxyBody(msgspec.Struct, forbid_unknown_fields=False):
    name: str | None = None
    listen: str | None = None
    upstream: str | None = None
    enabled: bool | None = None


class _ToxicUpdate(msgspec.Struct, forbid_unknown_fields=False):
    toxicity: float | None = None
    attributes: dict[str, Any] | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: toxiproxy answers every User-Agent that starts with this (every browser's) with
#: 403 "User agent not allowed" (its stopBrowsersMiddleware); so do we.
BROWSER_AGENT_PREFIX = b"Mozilla/"
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class Refusal(NamedTuple):
    """An answer given instead of running the request."""

    status: int
    content_type: str
    body: bytes


def _json_refusal(status: int, message: str) -> Refusal:
    body = msgspec.json.encode({"error": message, "status": status})
    return Refusal(status, "application/json", body)


def is_loopback_authority(authority: str, own_host: str = "127.0.0.1") -> bool:
    """Whether ``host[:port]`` (a Host header, an origin's authority) names this
    machine: ``localhost``, a loopback IP (``[::1]`` in brackets) or ``own_host``.

    Any port is fine: an ssh or ``kubectl port-forward`` tunnel changes the port
    the client sees, and a DNS-rebinding page can only send its own host name.
    """
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or ":" not in host or (rest and not rest.startswith(":")):
            return False
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = authority.partition(":")
        port = port_text if sep else None
    if port is not None and not (port.isascii() and port.isdigit()):
        return False
    host = host.lower()
    return host == own_host.lower() or is_loopback(host)


def refusal(
    method: bytes, headers: Sequence[tuple[bytes, bytes]], own_host: str = "127.0.0.1"
) -> Refusal | None:
    """Why a request must not run, or None: the guard against web pages.

    A page in a browser can send a POST with a ``text/plain`` body to any
    address without asking first (no CORS preflight), also to a name it made
    resolve to 127.0.0.1. So, in this order: a browser User-Agent gets
    toxiproxy's 403; a Host or Origin that does not name a loopback host gets
    403; a POST/PUT/PATCH whose Content-Type is given and is not
    ``application/json`` gets 415 (toxiproxy's clients send JSON or no body).
    ``headers`` are h11's: lower-case names, raw values.
    """
    for name, value in headers:
        if name == b"user-agent" and value.startswith(BROWSER_AGENT_PREFIX):
            return Refusal(403, "text/plain; charset=utf-8", b"User agent not allowed\n")
    for name, value in headers:
        if name == b"host":
            text = value.decode("latin-1")
            if not is_loopback_authority(text, own_host):
                return _json_refusal(
                    403,
                    f"Host {text!r} is not a loopback address: the chaos API answers only "
                    "requests addressed to localhost, 127.0.0.1 or [::1]",
                )
        elif name == b"origin":
            text = value.decode("latin-1")
            scheme, sep, authority = text.partition("://")
            if not (
                sep
                and scheme.lower() in ("http", "https")
                and is_loopback_authority(authority, own_host)
            ):
                return _json_refusal(
                    403,
                    f"Origin {text!r} is not a loopback origin: web pages may not drive "
                    "the chaos API",
                )
    if method in _BODY_METHODS:
        for name, value in headers:
            if name == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
                if media != b"application/json":
                    return _json_refusal(
                        415,
                        f"Content-Type must be application/json, not "
                        f"{value.decode('latin-1')!r} (curl: add -H 'Content-Type: "
                        "application/json')",
                    )
    return None


class ProxyRegistry:
    """Named proxies and the REST routes over them."""

    def __init__(self, *, seed: int = 0) -> None:
        self.proxies: dict[str, ChaosProxy] = {}
        self.seed = seed

    def add(self, proxy: ChaosProxy) -> None:
        """Serve an existing (started or not) proxy under its name."""
        if proxy.name in self.proxies:
            raise ApiError(409, "proxy already exists")
        self.proxies[proxy.name] = proxy

    async def close(self) -> None:
        for proxy in list(self.proxies.values()):
            await proxy.stop()

    # --- routing ----------------------------------------------------------------

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Answer one request: (status, JSON-able payload or None)."""
        try:
            return await self._route(method, path.split("?", 1)[0], body)
        except _HANDLED as exc:
            status, message = _status_of(exc)
            return status, {"error": message, "status": status}

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"] and method == "GET":
            return 200, {"version": VERSION}
        if parts == ["reset"] and method == "POST":
            for proxy in self.proxies.values():
                proxy.reset()
                await proxy.enable()
            return 204, None
        if parts == ["populate"] and method == "POST":
            return await self._populate(body)
        if not parts or parts[0] != "proxies":
            raise ApiError(404, "not found")
        if len(parts) == 1:
            if method == "GET":
                return 200, {n: self._proxy_json(p) for n, p in self.proxies.items()}
            if method == "POST":
                proxy = await self._create(_decode(body, _ProxyBody))
                return 201, self._proxy_json(proxy)
            raise ApiError(405, "method not allowed")
        proxy = self._get(parts[1])
        if len(parts) == 2:
            if method == "GET":
                return 200, self._proxy_json(proxy)
            if method in ("POST", "PATCH"):
                await self._update(proxy, _decode(body, _ProxyBody))
                return 200, self._proxy_json(proxy)
            if method == "DELETE":
                await proxy.stop()
                del self.proxies[proxy.name]
                return 204, None
            raise ApiError(405, "method not allowed")
        if parts[2] == "faults" and len(parts) == 3 and method == "GET":
            return 200, [msgspec.to_builtins(r) for r in proxy.faults]
        if parts[2] != "toxics":
            raise ApiError(404, "not found")
        if len(parts) == 3:
            if method == "GET":
                return 200, [msgspec.to_builtins(t) for t in proxy.toxics]
            if method == "POST":
                spec = proxy.add_toxic(_toxic_body(_decode(body, dict[str, Any])))
                return 200, msgspec.to_builtins(spec)
            raise ApiError(405, "method not allowed")
        if len(parts) == 4:
            name = parts[3]
            if method == "GET":
                return 200, msgspec.to_builtins(proxy.get_toxic(name))
            if method in ("POST", "PATCH"):
                upd = _decode(body, _ToxicUpdate)
                attributes = upd.attributes
                if attributes is not None:  # unknown keys are ignored, as toxiproxy does
                    attributes = known_attributes(proxy.get_toxic(name).type, attributes)
                spec = proxy.update_toxic(name, toxicity=upd.toxicity, attributes=attributes)
                return 200, msgspec.to_builtins(spec)
            if method == "DELETE":
                proxy.remove_toxic(name)
                return 204, None
            raise ApiError(405, "method not allowed")
        raise ApiError(404, "not found")

    def _get(self, name: str) -> ChaosProxy:
        try:
            return self.proxies[name]
        except KeyError:
            raise ApiError(404, "proxy not found") from None

    @staticmethod
    def _proxy_json(proxy: ChaosProxy) -> Any:
        return msgspec.to_builtins(proxy.info())

    async def _create(self, body: _ProxyBody) -> ChaosProxy:
        if not body.name or not body.upstream:
            raise ApiError(400, "missing required field: name and upstream")
        if body.name in self.proxies:
            raise ApiError(409, "proxy already exists")
        listen = body.listen or "127.0.0.1:0"
        _loopback_listen(listen)
        split_hostport(body.upstream)
        proxy = ChaosProxy(
            upstream=body.upstream,
            listen=listen,
            name=body.name,
            seed=self.seed,
            enabled=True if body.enabled is None else body.enabled,
        )
        await proxy.start()
        self.proxies[proxy.name] = proxy
        return proxy

    async def _update(self, proxy: ChaosProxy, body: _ProxyBody) -> None:
        """toxiproxy's ProxyUpdate. A ``listen`` other than the proxy's address (port
        0: any free port, as toxiproxy resolves it) stops the proxy, which drops its
        connections, and listens there if it is to stay (or become) enabled; if that
        bind fails, the proxy is left disabled on the new address (500)."""
        listen = None if body.listen is None else _loopback_listen(body.listen)
        if body.upstream is not None:
            split_hostport(body.upstream)  # check everything before changing anything
        enabled = proxy.enabled if body.enabled is None else body.enabled
        if listen is not None and _moves(proxy, *listen):
            await proxy.disable()
            await proxy.move(*listen)
        if body.upstream is not None:
            proxy.set_upstream(body.upstream)
        if not enabled:
            await proxy.disable()
            return
        try:
            await proxy.enable()
        except OSError:
            proxy.enabled = False
            raise

    async def _populate(self, body: bytes) -> tuple[int, Any]:
        """toxiproxy's Populate: a list of proxies (or our ``{"proxies": [...]}``), each
        replacing a proxy of its name. Every entry is checked before any proxy is made;
        an error answers toxiproxy's shape, ``{"error", "status", "proxies"}``, where
        ``proxies`` lists those made before the error (null if none)."""
        try:
            raw = msgspec.json.decode(body or b"[]")
        except msgspec.DecodeError as exc:
            return _populate_error(400, f"bad request body: {exc}", [])
        items = raw.get("proxies", []) if isinstance(raw, dict) else raw
        if not isinstance(items, list):
            return _populate_error(400, "bad request body: expected a list of proxies", [])
        specs: list[_ProxyBody] = []
        try:
            for i, item in enumerate(items, 1):
                try:
                    spec = msgspec.convert(item, _ProxyBody)
                except msgspec.ValidationError as exc:
                    raise ApiError(400, f"bad request body: {exc} (proxy {i})") from None
                if not spec.name:
                    raise ApiError(400, f"missing required field: name at proxy {i}")
                if not spec.upstream:
                    raise ApiError(400, f"missing required field: upstream at proxy {i}")
                _loopback_listen(spec.listen or "127.0.0.1:0")
                split_hostport(spec.upstream)
                specs.append(spec)
        except _HANDLED as exc:
            return _populate_error(*_status_of(exc), [])
        created: list[Any] = []
        for spec in specs:
            try:
                existing = self.proxies.pop(spec.name or "", None)
                if existing is not None:
                    await existing.stop()
                created.append(self._proxy_json(await self._create(spec)))
            except _HANDLED as exc:
                return _populate_error(*_status_of(exc), created)
        return 201, {"proxies": created}


_HANDLED = (
    ApiError,
    ToxicNotFoundError,
    ToxicExistsError,
    InvalidToxicError,
    ValueError,
    msgspec.ValidationError,
    ChaosError,
    OSError,
)


def _status_of(exc: BaseException) -> tuple[int, str]:
    """The status and message of an error the routes raise (see ``_HANDLED``)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, ToxicNotFoundError):
        return 404, str(exc.args[0])
    if isinstance(exc, ToxicExistsError):
        return 409, str(exc)
    if isinstance(exc, (InvalidToxicError, ValueError, msgspec.ValidationError)):
        return 400, str(exc)
    return 500, str(exc)


def _populate_error(status: int, message: str, created: list[Any]) -> tuple[int, Any]:
    return status, {"error": message, "status": status, "proxies": created or None}


def _loopback_listen(listen: str) -> tuple[str, int]:
    host, port = split_hostport(listen)
    if not is_loopback(host):
        raise ApiError(400, f"listen address {listen!r} is not loopback (loopback only)")
    return host, port


def _moves(proxy: ChaosProxy, host: str, port: int) -> bool:
    """Whether listening on (host, port) means moving the proxy (toxiproxy's Differs)."""
    same_host = host == proxy.host or (host == "localhost" and proxy.host in ("127.0.0.1", "::1"))
    return port == 0 or port != proxy.port or not same_host


def _toxic_body(raw: dict[str, Any]) -> dict[str, Any]:
    """A toxic as POSTed, without the attributes its type does not have (toxiproxy
    ignores them; the CLI and Python refuse them)."""
    ttype, attributes = raw.get("type"), raw.get("attributes")
    if isinstance(ttype, str) and isinstance(attributes, dict):
        return {**raw, "attributes": known_attributes(ttype, attributes)}
    return raw


def _decode(body: bytes, typ: Any) -> Any:
    try:
        return msgspec.json.decode(body or b"{}", type=typ)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f"bad request body: {exc}") from None


class ApiServer:
    """Serves a :class:`ProxyRegistry` over HTTP/1.1 (h11) on a loopback address."""

    def __init__(
        self, registry: ProxyRegistry | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"the REST API listens on loopback only, not {host!r}")
        self.registry = registry or ProxyRegistry()
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self, *, close_proxies: bool = True) -> None:
        if self._server is not None:
            self._server.close()
        # Close the connections rather than cancel their tasks: asyncio's stream
        # server logs a cancelled handler task as an error.
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=2)
            for task in pending:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if close_proxies:
            await self.registry.close()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and request is None:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_BODY:
                        raise h11.RemoteProtocolError("body too large")
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            refused = refusal(request.method, request.headers, self._host)
            if refused is not None:
                status, content_type, out = refused
            else:
                status, payload = await self.registry.handle(
                    request.method.decode(), request.target.decode(), bytes(body)
                )
                content_type = "application/json"
                out = b"" if payload is None else msgspec.json.encode(payload)
            headers = [
                ("content-type", content_type),
                ("content-length", str(len(out))),
                ("x-content-type-options", "nosniff"),
            ]
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            if out:
                writer.write(conn.send(h11.Data(data=out)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
