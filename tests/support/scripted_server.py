"""A tiny HTTP/1.1 server whose every answer is written by the test (real sockets).

For behaviours the reference server does not have on purpose (a final chunk
carrying text, a gzip body nobody asked for, an HTML page, a body that never
ends): the test passes an async ``handler(request, reply)`` that writes what a
hostile or unusual server would. It listens on 127.0.0.1, port 0, and records
every request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Reply:
    """Write one response: ``start`` then ``send`` pieces (chunked) then ``end``."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._chunked = True
        self.ended = False

    async def start(
        self, status: int = 200, headers: dict[str, str] | None = None, *, chunked: bool = True
    ) -> None:
        """Status line and headers; ``chunked=False`` sends a close-delimited body."""
        self._chunked = chunked
        lines = [f"HTTP/1.1 {status} X"]
        hdrs = {"content-type": "application/x-ndjson", **(headers or {})}
        if chunked:
            hdrs["transfer-encoding"] = "chunked"
        else:
            hdrs["connection"] = "close"
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()

    async def send(self, data: bytes) -> None:
        if self._chunked:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._writer.write(data)
        await self._writer.drain()

    async def end(self) -> None:
        if self._chunked:
            self._writer.write(b"0\r\n\r\n")
            await self._writer.drain()
        else:
            self._writer.close()
        self.ended = True

    async def respond(
        self, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """A whole response with Content-Length."""
        hdrs = {"content-type": "application/json", **(headers or {})}
        hdrs["content-length"] = str(len(body))
        head = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in hdrs.items())]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self._writer.drain()
        self.ended = True

    def drop(self) -> None:
        """Close the connection abruptly (mid-body)."""
        self._writer.close()
        self.ended = True


Handler = Callable[[Request, Reply], Awaitable[None]]


@dataclass
class ScriptedServer:
    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # handlers see EOF or a ConnectionError and return
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for task in pending:  # a handler stuck in a long sleep
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        self.connections += 1
        try:
            while not writer.is_closing():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                reply = Reply(writer)
                await self.handler(request, reply)
                if not reply.ended:
                    writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
