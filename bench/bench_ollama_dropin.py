"""What the ollama drop-in costs per chunk, next to the official client and StreamClient.

Runs the reference server in a separate process and, each in a fresh child process
(so CPU is measured alone), the same concurrent /api/generate streams through:

* ``ollama``: the official ``ollama.AsyncClient`` (httpx, HTTP/1.1, pydantic per chunk);
* ``dropin``: ``resilient_stream.ollama.AsyncClient``: the official class on
  ``ResilientTransport`` (HTTP/2 underneath; ollama's own line parsing and pydantic);
* ``dropin_h1``: the same with ``http2=False`` (what talking to a bare Ollama costs);
* ``streamclient``: ``StreamClient`` itself (msgspec chunks, no pydantic).

Reports client CPU microseconds per chunk and wall time, side by side, with ratios
to the official client. Usage:

    python bench/bench_ollama_dropin.py [--streams 100] [--tokens 300] [--rounds 3]
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
opts = {"num_predict": tokens}

async def run():
    if mode == "streamclient":
        from resilient_stream import StreamClient, StreamConfig
        async with StreamClient(url, config=StreamConfig.load(env={})) as c:
            async def one(i):
                n = 0
                async for _ in c.generate(model="m", prompt=f"s{i}", raw=True, options=opts):
                    n += 1
                return n
            return sum(await asyncio.gather(*(one(i) for i in range(streams))))
    if mode == "ollama":
        from ollama import AsyncClient
        client = AsyncClient(url)
    else:
        from resilient_stream import StreamConfig
        from resilient_stream.ollama import AsyncClient
        client = AsyncClient(url, config=StreamConfig.load(env={}, http2=mode == "dropin"))
    async def one(i):
        n = 0
        async for part in await client.generate("m", f"s{i}", raw=True, options=opts, stream=True):
            n += len(part["response"]) >= 0
        return n
    try:
        return sum(await asyncio.gather(*(one(i) for i in range(streams))))
    finally:
        await client.close() if hasattr(client, "close") else None

cpu0, t0 = time.process_time(), time.perf_counter()
chunks = asyncio.run(run())
cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
print(json.dumps({"chunks": chunks, "cpu": cpu, "wall": wall}))
"""

MODES = {
    "ollama": "official ollama.AsyncClient (httpx HTTP/1.1)",
    "dropin": "resilient_stream.ollama.AsyncClient (HTTP/2)",
    "dropin_h1": "resilient_stream.ollama.AsyncClient (http2=False)",
    "streamclient": "StreamClient (msgspec chunks)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--rate", type=float, default=0.0, help="server tokens/s per stream")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "resilient_stream.cli", "serve", "--port", "0",
         "--tokens-per-second", str(args.rate), "--stop-probability", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        wall: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, url, mode, str(args.streams), str(args.tokens)],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                assert r["chunks"] == args.streams * (args.tokens + 1), r
                cpu[mode].append(r["cpu"] / r["chunks"] * 1e6)
                wall[mode].append(r["wall"])

        def median(xs: list[float]) -> float:
            return sorted(xs)[len(xs) // 2]

        base = median(cpu["ollama"])
        print(f"streams={args.streams} tokens={args.tokens} rate={args.rate} rounds={args.rounds}")
        print("| client | CPU us/chunk (median) | vs official | wall s (median) |")
        print("|---|---|---|---|")
        for mode, label in MODES.items():
            c = median(cpu[mode])
            print(f"| {label} | {c:.1f} | {c / base:.2f}x | {median(wall[mode]):.2f} |")
    finally:
        server.terminate()
        server.wait(10)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
