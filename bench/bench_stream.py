"""What resilience costs per chunk: StreamClient vs a bare loop on the same transport.

Runs the reference server in a separate process and, in this process, the same
streams two ways, each in a fresh child process so CPU is measured alone:

* ``bare``: httpx.AsyncClient(transport=MultiplexedTransport()) + NdjsonFramer +
  ChunkDecoder, no retry/resume/timeouts (the floor for our stack);
* ``resilient``: StreamClient (resume bookkeeping, per-read stall timer, seams).

Reports client CPU microseconds per chunk and the ratio. Usage:

    python bench/bench_stream.py [--streams 100] [--tokens 300] [--rate 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import asyncio, json, sys, time
url, mode, streams, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def bare():
    import httpx
    from resilient_stream.codec import ChunkDecoder, GenerateChunk, NdjsonFramer
    from resilient_stream.transport import MultiplexedTransport
    dec = ChunkDecoder(GenerateChunk)
    async with httpx.AsyncClient(transport=MultiplexedTransport(), timeout=None) as c:
        async def one(i):
            n = 0
            framer = NdjsonFramer()
            body = {"model": "m", "prompt": f"s{i}", "raw": True,
                    "options": {"num_predict": tokens}}
            async with c.stream("POST", url + "/api/generate", json=body) as r:
                async for data in r.aiter_raw():
                    n += len(dec.decode_lines(framer.feed(data)))
            return n
        return sum(await asyncio.gather(*(one(i) for i in range(streams))))

async def resilient():
    from resilient_stream import StreamClient, StreamConfig
    async with StreamClient(url, config=StreamConfig.load(env={})) as c:
        async def one(i):
            n = 0
            opts = {"num_predict": tokens}
            async for _ in c.generate(model="m", prompt=f"s{i}", raw=True, options=opts):
                n += 1
            return n
        return sum(await asyncio.gather(*(one(i) for i in range(streams))))

cpu0, t0 = time.process_time(), time.perf_counter()
chunks = asyncio.run(bare() if mode == "bare" else resilient())
cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
print(json.dumps({"chunks": chunks, "cpu": cpu, "wall": wall}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--rate", type=float, default=0.0, help="server tokens/s per stream")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resilient_stream.cli",
            "serve",
            "--port",
            "0",
            "--tokens-per-second",
            str(args.rate),
            "--stop-probability",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        results: dict[str, list[float]] = {"bare": [], "resilient": []}
        for _ in range(args.rounds):
            for mode in results:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, url, mode, str(args.streams), str(args.tokens)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(r["cpu"] / r["chunks"] * 1e6)
        bare = sorted(results["bare"])[len(results["bare"]) // 2]
        res = sorted(results["resilient"])[len(results["resilient"]) // 2]
        print(f"streams={args.streams} tokens={args.tokens} rate={args.rate} rounds={args.rounds}")
        print("| client | CPU us/chunk (median) |\n|---|---|")
        print(f"| bare MultiplexedTransport + msgspec | {bare:.1f} |")
        print(f"| StreamClient (resume, stall timer, seams) | {res:.1f} |")
        print(f"ratio resilient/bare: {res / bare:.2f}")
    finally:
        server.terminate()
        server.wait(10)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
