"""``resilient-stream bench``: run the benchmarks in ``bench/`` and write their tables.

The benchmark scripts live in the repository's ``bench/`` folder (they compare
against peers from the ``bench`` extra: ``pip install -e '.[bench]'``), so run
this from a checkout. Each script prints its table (and most update their
section of docs/benchmarks.md and their plot in docs/img/).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

#: name -> (script, one-line description)
BENCHMARKS = {
    "transport": (
        "bench_transport.py",
        "HTTP/2 transport vs httpx, aiohttp, ollama, niquests, floor",
    ),
    "buffering": (
        "bench_buffering.py",
        "adaptive windows, slow consumers, memory, stall detection",
    ),
    "stream": ("bench_stream.py", "what resilience costs per chunk over the bare transport"),
    "server": ("bench_server.py", "reference server chunks/s on one core, h1 and h2"),
    "proxy": ("bench_proxy.py", "chaos proxy added latency and throughput"),
    "openai": ("bench_openai_stream.py", "SSE vs NDJSON codec and stream cost"),
    "ollama": ("bench_ollama_dropin.py", "ollama drop-in vs the official client"),
    "sdk": ("bench_sdk.py", "ResilientTransport pass-through cost; SDKs with and without it"),
    "e2e": (
        "bench_e2e.py",
        "every user-facing path, 300-10,000 streams, CPU/RSS/TTFT ratios (~15 min)",
    ),
    "ttft": (
        "bench_ttft.py",
        "time to first token StreamClient adds over the bare loop, 1,000 live streams",
    ),
    "realmodel": (
        "bench_realmodel.py",
        "resume on real llama.cpp servers (opt-in: scripts/realmodel-setup first)",
    ),
}
QUICK = {"transport", "server", "realmodel", "e2e"}  # scripts that take --quick
#: Scripts that take ``--sizes`` / ``--lengths`` (passed on when given).
SIZED = {"e2e"}
#: Not run by a bare ``resilient-stream bench``: they need a set-up cache (name them).
OPT_IN = {"realmodel"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lines = "\n".join(f"  {k:<10} {v[1]}" for k, v in BENCHMARKS.items())
    p = sub.add_parser(
        "bench",
        help="run benchmarks (from a checkout) and write tables and plots",
        description=f"Run benchmarks from ./bench.\n\nBenchmarks:\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks to run (default: all but the opt-in realmodel)",
    )
    p.add_argument("--quick", action="store_true", help="small runs where supported")
    p.add_argument("--dir", default="bench", help="benchmark folder (%(default)s)")
    p.add_argument("--sizes", default=None, help="e2e: concurrent streams per cell, e.g. 300,1000")
    p.add_argument("--lengths", default=None, help="e2e: short (40 tokens), long (400), or both")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    names = args.names or [n for n in BENCHMARKS if n not in OPT_IN]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    failed = []
    for i, name in enumerate(names, 1):
        script = folder / BENCHMARKS[name][0]
        if not script.is_file():
            print(
                f"[{i}/{len(names)}] {name}: {script} not found (run from a checkout)",
                file=sys.stderr,
            )
            failed.append(name)
            continue
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick and name in QUICK else [])
        if name in SIZED:
            for flag in ("sizes", "lengths"):
                value = getattr(args, flag, None)
                if value:
                    cmd += [f"--{flag}", value]
        print(f"[{i}/{len(names)}] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        started = time.monotonic()
        code = subprocess.call(cmd)
        print(
            f"[{i}/{len(names)}] {name}: exit {code} in {time.monotonic() - started:.0f}s",
            file=sys.stderr,
        )
        if code != 0:
            failed.append(name)
    return 1 if failed else 0
