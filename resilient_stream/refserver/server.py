"""ReferenceServer: an Ollama-compatible server speaking HTTP/1.1 and HTTP/2 on one port.

Plain TCP: the first bytes decide (the HTTP/2 connection preface means h2c
with prior knowledge, anything else is HTTP/1.1). TLS: ALPN decides.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from types import TracebackType

from resilient_stream.refserver.core import ServerCore
from resilient_stream.refserver.faults import FaultPlan
from resilient_stream.refserver.h1_server import H1Protocol
from resilient_stream.refserver.h2_server import H2Protocol
from resilient_stream.refserver.settings import ServerSettings, ServerStats

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _Sniffer(asyncio.Protocol):
    """Holds a new connection until its protocol is known, then hands it over."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.core.sniffing.add(self)
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            alpn = sslobj.selected_alpn_protocol()
            if alpn == "h2":
                self._switch(H2Protocol(self.core))
            elif alpn == "http/1.1" or not self.core.settings.http2:
                self._switch(H1Protocol(self.core))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf = self.buf
        settings = self.core.settings
        if len(buf) < len(H2_PREFACE) and H2_PREFACE.startswith(buf):
            return  # could still be the preface
        if buf.startswith(H2_PREFACE) and settings.http2:
            self._switch(H2Protocol(self.core))
        elif settings.http1:
            self._switch(H1Protocol(self.core))
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.sniffing.discard(self)

    def _switch(self, proto: H1Protocol | H2Protocol) -> None:
        assert self.transport is not None
        self.core.sniffing.discard(self)
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        if self.buf:
            buf, self.buf = self.buf, b""
            proto.data_received(buf)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class ReferenceServer:
    """The reference server, as an async context manager.

    ``async with ReferenceServer(port=0, tokens_per_second=50) as srv: srv.url``.
    Pass keywords (see :class:`ServerSettings`) or a ready ``settings`` object.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens_per_second: float = 0.0,
        first_token_delay: float = 0.0,
        jitter: float = 0.0,
        batch_steps: bool = False,
        seed: int = 0,
        max_concurrent_streams: int = 100,
        stop_probability: float | None = None,
        max_tokens: int = 4096,
        faults: FaultPlan | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        http2: bool = True,
        http1: bool = True,
        line_separators: bool = False,
        models: Sequence[str] | None = None,
        final_chunk_text: bool = False,
        tokens_per_chunk: int = 1,
        report_tokens: bool = True,
        settings: ServerSettings | None = None,
    ) -> None:
        self.settings = settings or ServerSettings(
            host=host,
            port=port,
            tokens_per_second=tokens_per_second,
            first_token_delay=first_token_delay,
            jitter=jitter,
            batch_steps=batch_steps,
            seed=seed,
            max_concurrent_streams=max_concurrent_streams,
            stop_probability=stop_probability,
            max_tokens=max_tokens,
            faults=faults,
            tls_cert=tls_cert,
            tls_key=tls_key,
            http2=http2,
            http1=http1,
            line_separators=line_separators,
            models=None if models is None else tuple(models),
            final_chunk_text=final_chunk_text,
            tokens_per_chunk=tokens_per_chunk,
            report_tokens=report_tokens,
        )
        self._core: ServerCore | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def stats(self) -> ServerStats:
        if self._core is None:
            raise RuntimeError("the server is not started")
        return self._core.stats

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_cert else "http"
        host = self.settings.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def _ssl_context(self) -> ssl.SSLContext | None:
        st = self.settings
        if st.tls_cert is None or st.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(st.tls_cert, st.tls_key)
        alpn = (["h2"] if st.http2 else []) + (["http/1.1"] if st.http1 else [])
        ctx.set_alpn_protocols(alpn)
        return ctx

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("already started")
        loop = asyncio.get_running_loop()
        core = ServerCore(self.settings, loop)
        self._core = core
        self._server = await loop.create_server(
            lambda: _Sniffer(core),
            self.settings.host,
            self.settings.port,
            ssl=self._ssl_context(),
            backlog=2048,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening, drop every connection, cancel every timer."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        core = self._core
        if core is not None:
            for conn in [*core.connections, *core.sniffing]:
                conn.abort()
            core.sched.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> ReferenceServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
