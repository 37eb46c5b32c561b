"""What ResilientTransport costs per chunk while no resume happens, beside what it wraps.

One run, the reference server in its own process, and each client in a fresh child
process (so its CPU, ``time.process_time()``, is measured alone, from after its imports
and a ``gc.collect()``: a full collection of the imported SDKs' objects, landing in one
mode's window or another's by chance, moved single runs by 0.1 s), the same concurrent
streams through:

* ``mt_ndjson`` / ``mt_sse``: ``httpx.AsyncClient(transport=MultiplexedTransport())``
  reading the raw body of ``/api/generate`` (NDJSON) / ``/v1/chat/completions`` (SSE);
* ``mt_ndjson_t`` / ``mt_sse_t``: the same with a read timeout (``config.idle_timeout``):
  equal settings, as ResilientTransport watches every read with a deadline;
* ``rt_ndjson`` / ``rt_sse``: the same through ``ResilientTransport()`` (which wraps a
  MultiplexedTransport): the pass-through path;
* ``ollama`` / ``ollama_rt``: ``ollama.AsyncClient().generate(stream=True)`` on stock
  httpx (HTTP/1.1) / with ``transport=ResilientTransport()``;
* ``openai`` / ``openai_rt``: ``openai.AsyncOpenAI().chat.completions.create(stream=True)``
  on stock httpx / with ``http_client=httpx.AsyncClient(transport=ResilientTransport())``.

The server paces every stream on one clock (``--batch-steps``, as a batched decoder's
steps) unless ``--own-clocks``. On their own clocks, how many streams' tokens share one
of the server's writes depends on how close together a client opened its streams, so
two clients read the same chunks in different numbers of reads (measured, 10 streams:
1230 event-loop turns through ResilientTransport, which sets a stream up about 18 us
slower, against 893 for MultiplexedTransport). On one clock both read alike (125 and
121 turns for 500 chunks), and what differs is the clients' own work.

Prints CPU microseconds per chunk (median of the rounds, modes interleaved per round),
the ratios the issue sets goals for (ResilientTransport <= 1.1x MultiplexedTransport;
SDK + ResilientTransport <= 0.8x the SDK on stock httpx), and writes them to
``bench/results/sdk.json``. Usage:

    python bench/bench_sdk.py [--streams 100] [--tokens 300] [--rate 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import asyncio, json, sys, time
url, mode, streams, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import httpx, ollama, openai  # imported before the clock starts
from resilient_stream import StreamConfig
from resilient_stream.sdk import ResilientTransport
from resilient_stream.transport import MultiplexedTransport
config = StreamConfig.load(env={})
MSG = [{"role": "user", "content": "hi"}]

async def raw(transport, sse, read_timeout=None):
    timeout = httpx.Timeout(None, read=read_timeout)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
        async def one(i):
            if sse:
                path = "/v1/chat/completions"
                body = {"model": "m", "messages": [{"role": "user", "content": f"s{i}"}],
                        "max_tokens": tokens, "stream": True}
            else:
                path = "/api/generate"
                body = {"model": "m", "prompt": f"s{i}", "raw": True,
                        "options": {"num_predict": tokens}}
            n = 0
            async with http.stream("POST", url + path, json=body) as r:
                async for data in r.aiter_raw():
                    n += len(data)
            return n
        sizes = await asyncio.gather(*(one(i) for i in range(streams)))
        assert all(sizes), sizes
    return streams * (tokens + 1)

async def run_ollama(rt):
    kw = {"transport": ResilientTransport(config=config)} if rt else {}
    client = ollama.AsyncClient(url, **kw)
    async def one(i):
        n = 0
        async for part in await client.generate("m", f"s{i}", raw=True, stream=True,
                                                options={"num_predict": tokens}):
            n += len(part.response) >= 0
        return n
    try:
        return sum(await asyncio.gather(*(one(i) for i in range(streams))))
    finally:
        await client._client.aclose()

async def run_openai(rt):
    http = httpx.AsyncClient(transport=ResilientTransport(config=config)) if rt else None
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, http_client=http)
    async def one(i):
        n = 0
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"s{i}"}], max_tokens=tokens,
            stream=True)
        async for chunk in stream:
            n += 1
        return n
    try:
        return sum(await asyncio.gather(*(one(i) for i in range(streams))))
    finally:
        await client.close()

async def run():
    if mode == "mt_ndjson":
        return await raw(MultiplexedTransport(config), False)
    if mode == "mt_ndjson_t":
        return await raw(MultiplexedTransport(config), False, config.idle_timeout)
    if mode == "mt_sse_t":
        return await raw(MultiplexedTransport(config), True, config.idle_timeout)
    if mode == "rt_ndjson":
        return await raw(ResilientTransport(config=config), False)
    if mode == "mt_sse":
        return await raw(MultiplexedTransport(config), True)
    if mode == "rt_sse":
        return await raw(ResilientTransport(config=config), True)
    if mode.startswith("ollama"):
        return await run_ollama(mode.endswith("_rt"))
    return await run_openai(mode.endswith("_rt"))

import gc
gc.collect()  # the imports' garbage is settled before the clock: not the client's cost
cpu0, t0 = time.process_time(), time.perf_counter()
chunks = asyncio.run(run())
cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
print(json.dumps({"chunks": chunks, "cpu": cpu, "wall": wall}))
"""

MODES = {
    "mt_ndjson": "MultiplexedTransport, raw NDJSON body",
    "mt_ndjson_t": "MultiplexedTransport + read timeout, raw NDJSON body",
    "rt_ndjson": "ResilientTransport, raw NDJSON body",
    "mt_sse": "MultiplexedTransport, raw SSE body",
    "mt_sse_t": "MultiplexedTransport + read timeout, raw SSE body",
    "rt_sse": "ResilientTransport, raw SSE body",
    "ollama": "ollama.AsyncClient, stock httpx",
    "ollama_rt": "ollama.AsyncClient + ResilientTransport",
    "openai": "openai.AsyncOpenAI, stock httpx",
    "openai_rt": "openai.AsyncOpenAI + ResilientTransport",
}
#: (label, numerator, denominator, goal)
RATIOS = [
    ("ResilientTransport / MultiplexedTransport, NDJSON", "rt_ndjson", "mt_ndjson", 1.1),
    ("ResilientTransport / MultiplexedTransport, SSE", "rt_sse", "mt_sse", 1.1),
    (
        "ResilientTransport / MultiplexedTransport + read timeout, NDJSON",
        "rt_ndjson",
        "mt_ndjson_t",
        1.1,
    ),
    ("ResilientTransport / MultiplexedTransport + read timeout, SSE", "rt_sse", "mt_sse_t", 1.1),
    ("ollama + ResilientTransport / ollama on stock httpx", "ollama_rt", "ollama", 0.8),
    ("openai + ResilientTransport / openai on stock httpx", "openai_rt", "openai", 0.8),
]


def expected_chunks(mode: str, streams: int, tokens: int) -> int:
    # the openai SDK yields one chunk per event: the role chunk, the tokens, the finish
    return streams * (tokens + (2 if mode.startswith("openai") else 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--rate", type=float, default=0.0, help="server tokens/s per stream")
    ap.add_argument(
        "--own-clocks",
        action="store_true",
        help="pace each stream from its own start (default: one clock for all, as a batched "
        "decoder's steps, so that every mode's streams share the server's writes alike)",
    )
    ap.add_argument(
        "--final-counts",
        action="store_true",
        help="the server counts tokens only on the last chunk, as Ollama and OpenAI do "
        "(default: a running count on every chunk, the reference server's default)",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sdk.json"))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    server = subprocess.Popen(
        [sys.executable, "-m", "resilient_stream.cli", "serve", "--port", "0",
         "--tokens-per-second", str(args.rate), "--stop-probability", "0",
         *([] if args.own_clocks else ["--batch-steps"]),
         *(["--no-running-count"] if args.final_counts else [])],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        wall: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.rounds):
            for mode in modes:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, url, mode, str(args.streams), str(args.tokens)],
                    capture_output=True, text=True, check=False, timeout=600,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
                if out.returncode != 0:
                    raise SystemExit(f"{mode} failed:\n{out.stderr}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                want = expected_chunks(mode, args.streams, args.tokens)
                assert r["chunks"] == want, (mode, r, want)
                cpu[mode].append(r["cpu"] / r["chunks"] * 1e6)
                wall[mode].append(r["wall"])
    finally:
        server.terminate()
        server.wait(10)

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    us = {m: median(cpu[m]) for m in modes}
    print(f"streams={args.streams} tokens={args.tokens} rate={args.rate} rounds={args.rounds}")
    print("| client | CPU us/chunk (median) | wall s (median) |")
    print("|---|---|---|")
    for mode in modes:
        print(f"| {MODES[mode]} | {us[mode]:.1f} | {median(wall[mode]):.2f} |")
    print()
    print("| ratio (median over rounds of the round's ratio) | measured | goal |")
    print("|---|---|---|")
    # Each round runs every mode once, so a ratio is taken within a round and its median
    # over the rounds reported: the machine's speed drifts between rounds (shared cores),
    # which a ratio of two medians taken from different rounds would mix in.
    ratios = {}
    for label, num, den, goal in RATIOS:
        if num in us and den in us:
            per_round = [a / b for a, b in zip(cpu[num], cpu[den], strict=True)]
            ratios[label] = round(median(per_round), 3)
            print(f"| {label} | {ratios[label]:.2f}x | <= {goal}x |")
    result = {
        "benchmark": "bench_sdk",
        "args": vars(args),
        "python": platform.python_version(),
        "cpu_us_per_chunk": {m: round(v, 2) for m, v in us.items()},
        "cpu_us_per_chunk_rounds": {m: [round(v, 2) for v in cpu[m]] for m in modes},
        "wall_s": {m: round(median(wall[m]), 3) for m in modes},
        "ratios": ratios,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
