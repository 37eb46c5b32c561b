"""Per-record CPU of ResilientTransport's pass-through, in-process, beside the bare body.

No network, no server: one real :class:`H2ResponseStream` (on a stand-in connection
that only counts nothing) is fed one record per event-loop turn by a feeder task, as
the connection's ``data_received`` would, and read through ``httpx.Response.aiter_raw``:

* ``mt``: the bare body (MultiplexedTransport's ``__aiter__``), no read timeout;
* ``mt_t``: the same with a read timeout (the idle timer armed per wait);
* ``rt``: the same stream under ``PassThrough.body()`` (scan, limits, adaptive idle
  deadline), as ResilientTransport hands it to the SDK.

The network benchmark (bench_sdk.py) mixes this per-record cost with per-request set-up,
memory and the machine's noise; this one isolates it. Prints the minimum over the
rounds (modes interleaved) in microseconds per record and ``rt - mt_t``. Usage:

    python bench/bench_passthrough_records.py [--records 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx

from resilient_stream import StreamConfig
from resilient_stream.sdk.passthrough import PassThrough
from resilient_stream.sdk.wire import Ndjson, Sse, Wire
from resilient_stream.transport.deadlines import DeadlineWheel
from resilient_stream.transport.response import BODY_EXTENSION, H2ResponseStream
from resilient_stream.transport.stream import H2Stream

RECORDS = {
    "ndjson": (
        b'{"model":"m","created_at":"2024-01-01T00:00:00Z","response":" tok","done":false}\n',
        b'{"model":"m","response":"","done":true,"eval_count":3}\n',
    ),
    # the reference server's shape: fields after ``done`` (the scan's slower branch)
    "ndjson_ref": (
        b'{"model":"m","created_at":"2024-01-01T00:00:00Z","response":" tok","done":false,'
        b'"eval_count":1}\n',
        b'{"model":"m","response":"","done":true,"eval_count":3}\n',
    ),
    "sse": (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n\n',
        b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n",
    ),
}


class _Conn:
    """What H2ResponseStream asks of its connection, doing nothing."""

    endpoint = "bench"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deadlines = DeadlineWheel(loop)

    def stream_data_consumed(self, stream: H2Stream, n: int) -> None:
        pass

    def close_stream(self, stream: H2Stream) -> None:
        pass


class _Body(httpx.AsyncByteStream):
    def __init__(self, gen: AsyncIterator[bytes]) -> None:
        self._gen = gen

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen


async def _feed(s: H2Stream, n: int, record: bytes, last: bytes) -> None:
    for i in range(n):
        # a fresh bytes object per record, as a socket read makes
        data = bytes(bytearray(record if i < n - 1 else last))
        s.chunks.append(data)
        s.unacked += len(data)
        if i == n - 1:
            s.ended = True
        waiter = s.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await asyncio.sleep(0)


async def _one(mode: str, kind: str, n: int) -> int:
    loop = asyncio.get_running_loop()
    s = H2Stream(1, 65535)
    s.status = 200
    timeout = 30.0 if mode == "mt_t" else None
    body = H2ResponseStream(_Conn(loop), s, first=timeout, idle=timeout)  # type: ignore[arg-type]
    if mode == "rt":
        inner = httpx.Response(200, stream=body, extensions={BODY_EXTENSION: body})
        wire: Wire = Ndjson() if kind.startswith("ndjson") else Sse()
        passing = PassThrough(
            inner, wire, StreamConfig.load(env={}), token_limit=None, endpoint="bench"
        )
        response = httpx.Response(200, stream=_Body(passing.body()))
    else:
        response = httpx.Response(200, stream=body)
    feeder = asyncio.ensure_future(_feed(s, n, *RECORDS[kind]))
    reads = 0
    async for _ in response.aiter_raw():
        reads += 1
    await feeder
    return reads


#: One run of a mode on a record shape: the records (or reads) it got through.
One = Callable[[str, str, int], Coroutine[Any, Any, int]]


def best_us(one: One, modes: list[str], kind: str, n: int, rounds: int) -> dict[str, float]:
    """CPU microseconds per record of each mode, the minimum over ``rounds`` (modes
    interleaved, each run in a fresh event loop, checked to get all ``n`` records)."""
    us: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):
        for mode in modes:
            gc.collect()
            cpu = time.process_time()
            got = asyncio.run(one(mode, kind, n))
            cpu = time.process_time() - cpu
            assert got == n, (mode, kind, got, n)
            us[mode].append(cpu / n * 1e6)
    return {m: min(v) for m, v in us.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    modes = ["mt", "mt_t", "rt"]
    print(f"records={args.records} rounds={args.rounds}")
    print("| format | bare body | + read timeout | pass-through | pass-through - timeout |")
    print("|---|---|---|---|---|")
    for kind in RECORDS:
        best = best_us(_one, modes, kind, args.records, args.rounds)
        print(
            f"| {kind} | {best['mt']:.2f} | {best['mt_t']:.2f} | {best['rt']:.2f} "
            f"| {best['rt'] - best['mt_t']:+.2f} |"
        )


if __name__ == "__main__":
    main()
