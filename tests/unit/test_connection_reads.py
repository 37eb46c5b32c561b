"""Socket reads land in one reused buffer per thread (reads.py), not in a fresh
256 KiB ``bytes`` per read; each connection gets exactly the bytes that arrived, as
``bytes``, copied out before any other read can reuse the buffer."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any, cast

from resilient_stream.transport.connection import H2ClientConnection
from resilient_stream.transport.h2setup import ConnectionSettings
from resilient_stream.transport.reads import READ_SIZE, read_buffer


class _Spy(H2ClientConnection):
    """Records what the protocol edge hands to the core, instead of parsing it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        settings = ConnectionSettings(
            max_streams=100,
            stream_window=65_535,
            connection_window=65_535,
            ping_interval=0,
            ping_timeout=1,
        )
        super().__init__(cast(Any, SimpleNamespace(log=None)), settings, loop, "http://test:80")
        self.got: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.got.append(data)


async def test_connections_share_the_threads_buffer_and_each_gets_what_arrived() -> None:
    loop = asyncio.get_running_loop()
    a, b = _Spy(loop), _Spy(loop)
    assert isinstance(a, asyncio.BufferedProtocol)
    buf = a.get_buffer(-1)
    assert buf is b.get_buffer(-1) and len(buf) == READ_SIZE
    buf[:5] = b"first"
    a.buffer_updated(5)
    buf = b.get_buffer(-1)
    buf[:3] = b"two"  # the same memory, reused for the next read
    b.buffer_updated(3)
    assert a.got == [b"first"] and b.got == [b"two"]
    assert all(type(x) is bytes for x in a.got + b.got)


def test_each_thread_reads_into_its_own_buffer() -> None:
    mine = read_buffer()
    theirs: list[memoryview] = []
    t = threading.Thread(target=lambda: theirs.append(read_buffer()))
    t.start()
    t.join(10)
    assert theirs and theirs[0] is not mine and read_buffer() is mine
