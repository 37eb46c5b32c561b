"""Per-record CPU of StreamClient, in-process, beside the bare transport loop.

No network, no server: one real :class:`H2ResponseStream` (on the stand-in connection
of bench_passthrough_records.py) is fed one NDJSON record per event-loop turn, as the
connection's ``data_received`` would, and read

* ``bare``: through ``httpx.Response.aiter_raw`` with a msgspec line decoder (the bare
  loop of bench_e2e.py);
* ``sc``: by a real :class:`~resilient_stream.StreamClient` ``generate`` stream, whose
  transport hands it that response (its attempt, framer, decoder, assembler, stall
  deadline and delivery, all of it as over the network).

Network counts of the same comparison move by several thousand instructions a chunk
between runs (how many records a read carries depends on how far the client lags);
this one does not, so it is the yardstick for issue 14's resilience overhead (<= 1.15x
the bare loop). Prints the minimum over the rounds (modes interleaved), microseconds
per record, and the ratio. Usage:

    python bench/bench_stream_records.py [--records 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e_paths import Lines
from bench_passthrough_records import RECORDS, _Conn, _feed, best_us

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.transport.response import BODY_EXTENSION, H2ResponseStream
from resilient_stream.transport.stream import H2Stream

KINDS = ("ndjson", "ndjson_ref")


def _fed_response(kind: str, n: int) -> tuple[httpx.Response, asyncio.Future[None]]:
    """A 200 whose body is a real H2ResponseStream, fed ``n`` records by a task."""
    loop = asyncio.get_running_loop()
    s = H2Stream(1, 65535)
    s.status = 200
    body = H2ResponseStream(_Conn(loop), s, first=None, idle=None)  # type: ignore[arg-type]
    response = httpx.Response(
        200,
        headers={"content-type": "application/x-ndjson"},
        stream=body,
        extensions={BODY_EXTENSION: body, "http_version": b"HTTP/2"},
    )
    return response, asyncio.ensure_future(_feed(s, n, *RECORDS[kind]))


class _Fed(httpx.AsyncBaseTransport):
    """Answers every request with a fed body (StreamClient's one attempt)."""

    def __init__(self, kind: str, n: int) -> None:
        self.kind, self.n = kind, n
        self.feeders: list[asyncio.Future[None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response, feeder = _fed_response(self.kind, self.n)
        self.feeders.append(feeder)
        return response


async def _one(mode: str, kind: str, n: int) -> int:
    if mode == "bare":
        response, feeder = _fed_response(kind, n)
        lines = Lines()
        async for data in response.aiter_raw():
            lines.feed(data)
        await feeder
        assert lines.done
        return lines.chunks
    transport = _Fed(kind, n)
    config = StreamConfig.load(env={}, total_timeout=3600.0)
    chunks = 0
    async with StreamClient("http://bench.invalid", transport=transport, config=config) as c:
        stream = c.generate(model="m", prompt="p", options={"num_predict": 4 * n})
        async for _ in stream:
            chunks += 1
        assert stream.result.done and stream.result.attempts == 1
    await asyncio.gather(*transport.feeders)
    return chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default="bare,sc", help="bare, sc (one mode: a profiling run)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    print(f"records={args.records} rounds={args.rounds}")
    print("| format | bare loop us | StreamClient us | x bare |")
    print("|---|---|---|---|")
    for kind in KINDS:
        best = best_us(_one, modes, kind, args.records, args.rounds)
        bare, sc = best.get("bare", float("nan")), best.get("sc", float("nan"))
        print(f"| {kind} | {bare:.2f} | {sc:.2f} | {sc / bare:.2f} |")


if __name__ == "__main__":
    main()
