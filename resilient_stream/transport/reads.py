"""Socket reads into one reused buffer per thread, for ``asyncio.BufferedProtocol``.

A plain ``asyncio.Protocol`` gets each read as a new ``bytes`` that asyncio allocates
at its full read size (256 KiB) and then shrinks to what arrived. That size is above
glibc's mmap threshold, so a read can cost an ``mmap``, a page fault on each page it
touches, an ``mremap`` and a ``munmap``: at 3,000 streams with uneven token gaps,
StreamClient took 187k page faults for 123k chunks (the bare loop 24k) and 2.3 s of
system time. Read into this buffer instead, a connection copies out only the bytes
that arrived (one small ``bytes``), before the next read can reuse it: the event
loop of a thread runs one read callback at a time, so the connections of a thread
share one buffer.
"""

from __future__ import annotations

import threading

#: Bytes one read takes at most (asyncio's own ``max_size`` for socket reads).
READ_SIZE = 256 * 1024

_local = threading.local()


def read_buffer() -> memoryview:
    """This thread's read buffer (made on first use)."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(READ_SIZE))
    return view
