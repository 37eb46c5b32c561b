"""Quick measuring loop for the resilience layer's per-stream and per-chunk costs.

Not the official benchmark (that is bench_e2e.py): a small, repeatable A/B loop to
measure before and after each cut, and a way to run one client under py-spy.

The reference server runs paced in its own process; every client run is a fresh
child process, so ``time.process_time`` is the client's own CPU. Modes, interleaved
round by round so that load from other processes hits them alike:

* ``bare``: httpx.AsyncClient(transport=MultiplexedTransport()) + NdjsonFramer +
  the shared msgspec ChunkDecoder (no retry, resume or stall timers);
* ``client``: ``StreamClient.generate`` (everything the resilience layer does);
* ``aiohttp``: aiohttp + the same msgspec decoding (the peer of issue 14's goal).

Reported per mode: CPU per chunk (whole run / chunks), CPU per stream, and, from two
stream lengths, the marginal CPU per chunk and per stream set-up; RSS per idle open
stream (all streams have their first chunk and wait); wall vs the ideal paced time.

    .venv/bin/python bench/profile_stream.py --streams 1000 --tokens 40,400 --rate 20
    .venv/bin/python bench/profile_stream.py --streams 300 --modes client --pyspy /tmp/p.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("bare", "client", "aiohttp")


# --- child: the server ------------------------------------------------------------------


def serve(rate: float, port_file: str) -> None:
    from resilient_stream.refserver.server import ReferenceServer

    async def main() -> None:
        async with ReferenceServer(
            port=0, tokens_per_second=rate, stop_probability=0.0, max_concurrent_streams=1000
        ) as srv:
            Path(port_file).write_text(str(srv.port))  # noqa: ASYNC240 (once, at start)
            await asyncio.Event().wait()

    asyncio.run(main())


# --- child: one client run --------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _body(i: int, tokens: int) -> dict[str, Any]:
    return {"model": "m", "prompt": f"s{i}", "raw": True, "options": {"num_predict": tokens}}


class _Run:
    """What every mode reports: chunks, time to first chunk per stream, idle RSS."""

    def __init__(self, streams: int, idle: bool = False) -> None:
        self.streams = streams
        self.idle = idle  # an idle-RSS run: every stream stops after its first chunk
        self.chunks = 0
        self.firsts = 0
        self.all_first = asyncio.Event()
        self.release = asyncio.Event()
        self.ttft: list[float] = []

    async def first(self, t0: float) -> bool:
        """A stream has its first chunk: wait until every stream has (RSS), then say
        whether to stop reading (an idle run)."""
        self.ttft.append(time.perf_counter() - t0)
        self.firsts += 1
        if self.firsts == 1 and _BEFORE:  # the others are mostly still in set-up
            _allocations(_BEFORE[0], self.streams, "at the first chunk")
        if self.firsts == self.streams:
            self.all_first.set()
        await self.release.wait()
        return self.idle


async def _bare(url: str, run: _Run, tokens: int) -> None:
    import httpx
    import msgspec

    from resilient_stream.formats.ndjson import NdjsonFramer
    from resilient_stream.formats.ollama.framing import ChunkDecoder
    from resilient_stream.formats.ollama.types import GenerateChunk
    from resilient_stream.transport import MultiplexedTransport

    dec = ChunkDecoder(GenerateChunk)
    async with httpx.AsyncClient(transport=MultiplexedTransport(), timeout=None) as c:

        async def one(i: int) -> None:
            framer = NdjsonFramer()
            t0 = time.perf_counter()
            body = msgspec.json.encode(_body(i, tokens))
            n = 0
            async with c.stream("POST", url + "/api/generate", content=body) as r:
                async for data in r.aiter_raw():
                    k = len(dec.decode_lines(framer.feed(data)))
                    if k and not n:
                        n = k
                        if await run.first(t0):
                            break
                    else:
                        n += k
            run.chunks += n

        await _drive(run, [one(i) for i in range(run.streams)])


async def _client(url: str, run: _Run, tokens: int) -> None:
    from resilient_stream import StreamClient, StreamConfig

    async with StreamClient(url, config=StreamConfig.load(env={})) as c:

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            n = 0
            opts = {"num_predict": tokens}
            async with c.generate(model="m", prompt=f"s{i}", raw=True, options=opts) as s:
                async for _ in s:
                    n += 1
                    if n == 1 and await run.first(t0):
                        break
            run.chunks += n

        await _drive(run, [one(i) for i in range(run.streams)])


async def _aiohttp(url: str, run: _Run, tokens: int) -> None:
    import aiohttp
    import msgspec

    from resilient_stream.formats.ndjson import NdjsonFramer
    from resilient_stream.formats.ollama.framing import ChunkDecoder
    from resilient_stream.formats.ollama.types import GenerateChunk

    dec = ChunkDecoder(GenerateChunk)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            framer = NdjsonFramer()
            t0 = time.perf_counter()
            n = 0
            async with session.post(
                url + "/api/generate",
                data=msgspec.json.encode(_body(i, tokens)),
                headers={"content-type": "application/json"},
            ) as r:
                async for data in r.content.iter_any():
                    k = len(dec.decode_lines(framer.feed(data)))
                    if k and not n:
                        n = k
                        if await run.first(t0):
                            break
                    else:
                        n += k
            run.chunks += n

        await _drive(run, [one(i) for i in range(run.streams)])


_IDLE: dict[str, int] = {}
_BEFORE: list[Any] = []  # the tracemalloc snapshot before the streams (if tracing)


async def _drive(run: _Run, coros: list[Any]) -> None:
    """Run the streams; when every one holds its first chunk, read RSS, then let go."""
    import gc

    gc.collect()
    rss0 = _rss()
    trace = os.environ.get("PROFILE_STREAM_TRACEMALLOC")
    if trace:
        import tracemalloc

        tracemalloc.start(int(trace))
        before = tracemalloc.take_snapshot()
        _BEFORE.append(before)
    tasks = [asyncio.ensure_future(c) for c in coros]
    waiter = asyncio.ensure_future(run.all_first.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if run.all_first.is_set():
        _IDLE["rss"] = _rss() - rss0
        if trace:
            _allocations(before, run.streams)
    run.release.set()
    await asyncio.gather(*tasks)
    waiter.cancel()


def _allocations(before: Any, streams: int, when: str = "idle") -> None:
    """What every open stream holds, by allocating line (to stderr): ``when`` idle, or
    at the first chunk (set-up garbage of the streams still opening)."""
    import tracemalloc

    after = tracemalloc.take_snapshot()
    stats = after.compare_to(before, "lineno")
    total = sum(st.size_diff for st in stats)
    now, peak = tracemalloc.get_traced_memory()
    print(
        f"tracemalloc {when}: {total / streams:.0f} B per open stream; traced now "
        f"{now / streams:.0f} B, peak {peak / streams:.0f} B per stream (a peak above "
        "'now' is set-up garbage the allocator may keep as RSS)",
        file=sys.stderr,
    )
    for st in stats[:40]:
        frame = st.traceback[0]
        where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        print(
            f"{st.size_diff / streams:8.0f} B {st.count_diff / streams:6.2f} blocks  {where}",
            file=sys.stderr,
        )


def client(mode: str, url: str, streams: int, tokens: int, idle: bool) -> None:
    # Import every stack first: import cost stays out of the measurement.
    import aiohttp  # noqa: F401
    import httpx  # noqa: F401

    import resilient_stream
    import resilient_stream.transport  # noqa: F401

    fn = {"bare": _bare, "client": _client, "aiohttp": _aiohttp}[mode]
    run = _Run(streams, idle)

    async def main() -> None:
        await fn(url, run, tokens)

    cpu0, t0 = time.process_time(), time.perf_counter()
    asyncio.run(main())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    ttft = sorted(run.ttft)
    print(
        json.dumps(
            {
                "chunks": run.chunks,
                "cpu": cpu,
                "wall": wall,
                "idle_rss": _IDLE.get("rss", 0),
                "ttft_p50": ttft[len(ttft) // 2] if ttft else 0.0,
            }
        )
    )


# --- orchestration ------------------------------------------------------------------------


def start_server(rate: float) -> tuple[subprocess.Popen[bytes], str]:
    port_file = f"/tmp/profile_stream_port_{os.getpid()}"
    Path(port_file).unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--rate", str(rate), "--port-file", port_file]
    )
    for _ in range(400):
        if Path(port_file).exists() and Path(port_file).read_text():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        proc.wait()
        raise RuntimeError("server did not start")
    port = Path(port_file).read_text().strip()
    Path(port_file).unlink(missing_ok=True)
    return proc, f"http://127.0.0.1:{port}"


def run_child(
    mode: str,
    url: str,
    streams: int,
    tokens: int,
    pyspy: str | None,
    timeout: float,
    idle: bool = False,
) -> dict[str, Any]:
    # "client@/path/to/tree": the same mode from another checkout (before/after A/B)
    name, _, tree = mode.partition("@")
    script = str(Path(tree) / "bench" / "profile_stream.py") if tree else __file__
    cmd = [sys.executable, script, "--child", name, "--url", url]
    cmd += ["--streams", str(streams), "--tokens", str(tokens)] + (["--idle"] if idle else [])
    if pyspy and not idle:
        spy = str(Path(sys.executable).with_name("py-spy"))
        out = f"{pyspy}.{name}{'.alt' if tree else ''}.{streams}x{tokens}.json"
        cmd = [spy, "record", "--nonblocking", "-r", "200", "-f", "speedscope", "-o", out, "--"]
        cmd += [sys.executable, script, "--child", name, "--url", url]
        cmd += ["--streams", str(streams), "--tokens", str(tokens)]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{mode} failed: {' / '.join(tail)}")
    if proc.stderr and os.environ.get("PROFILE_STREAM_TRACEMALLOC"):
        print(proc.stderr.decode(errors="replace"), file=sys.stderr)
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1]))


#: The idle-RSS server's pace: after its first token a stream gets nothing for 50 s, so
#: every stream is open, has its first chunk, and holds no more while RSS is read.
IDLE_RATE = 0.02


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="1000", help="comma-separated stream counts")
    ap.add_argument("--tokens", default="40,400", help="comma-separated stream lengths")
    ap.add_argument("--rate", type=float, default=20.0, help="server tokens/s per stream")
    ap.add_argument(
        "--modes",
        default="bare,client",
        help=f"comma-separated of {MODES}; MODE@DIR runs MODE from the checkout in DIR",
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-cpu", action="store_true", help="only the idle RSS runs")
    ap.add_argument("--no-idle", action="store_true", help="no idle RSS runs")
    ap.add_argument("--pyspy", help="record each client run under py-spy to PREFIX.*.json")
    ap.add_argument("--json", help="append the raw results to this file")
    # child modes
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port-file", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--idle", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.rate, args.port_file)
        return
    if args.child:
        client(args.child, args.url, int(args.streams), int(args.tokens), args.idle)
        return

    modes = args.modes.split(",")
    sizes = [int(s) for s in args.streams.split(",")]
    lengths = [] if args.no_cpu else [int(t) for t in args.tokens.split(",")]
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    idle: dict[tuple[str, int], list[dict[str, Any]]] = {}
    servers = []
    try:
        if lengths:
            server, url = start_server(args.rate)
            servers.append(server)
        if not args.no_idle:
            idle_server, idle_url = start_server(IDLE_RATE)
            servers.append(idle_server)
        for _ in range(args.rounds):
            for n in sizes:
                if not args.no_idle:
                    for mode in modes:
                        r = run_child(mode, idle_url, n, 3, None, timeout=120, idle=True)
                        idle.setdefault((mode, n), []).append(r)
                        print(
                            f"  {mode:8s} {n:6d} idle: {r['idle_rss'] / n / 1024:5.1f} KB/stream, "
                            f"ttft p50 {r['ttft_p50'] * 1e3:.1f} ms",
                            flush=True,
                        )
                for t in lengths:
                    ideal = t / args.rate if args.rate else 0.0
                    for mode in modes:
                        r = run_child(mode, url, n, t, args.pyspy, timeout=60 + 20 * ideal)
                        r["ideal"] = ideal
                        results.setdefault((mode, n, t), []).append(r)
                        print(
                            f"  {mode:8s} {n:6d} x {t:4d}: "
                            f"{r['cpu'] / max(1, r['chunks']) * 1e6:6.1f} us/chunk, "
                            f"wall {r['wall']:.2f} s (ideal {ideal:.1f}), "
                            f"ttft p50 {r['ttft_p50'] * 1e3:.1f} ms",
                            flush=True,
                        )
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
    report(results, idle, modes, sizes, lengths)
    if args.json:
        with open(args.json, "a") as f:
            for (mode, n, t), rs in results.items():
                f.write(json.dumps({"mode": mode, "streams": n, "tokens": t, "runs": rs}) + "\n")
            for (mode, n), rs in idle.items():
                f.write(json.dumps({"mode": mode, "streams": n, "idle": True, "runs": rs}) + "\n")


def _med(rs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rs)


def _ref(per: dict[str, float], modes: list[str], name: str) -> float | None:
    return next((per[m] for m in modes if m.partition("@")[0] == name and m in per), None)


def report(
    results: dict[tuple[str, int, int], list[dict[str, Any]]],
    idle: dict[tuple[str, int], list[dict[str, Any]]],
    modes: list[str],
    sizes: list[int],
    lengths: list[int],
) -> None:
    """Medians over the rounds; ratios against ``bare`` (and ``aiohttp``) of the same run."""
    if idle:
        print("\n| streams | mode | idle KB per open stream | x bare |")
        print("|---|---|---|---|")
        for n in sizes:
            kb = {m: _med(idle[(m, n)], "idle_rss") / n / 1024 for m in modes}
            bare = _ref(kb, modes, "bare")
            for m in modes:
                xb = f"{kb[m] / bare:.2f}" if bare else "-"
                print(f"| {n} | {m} | {kb[m]:.1f} | {xb} |")
    if not results:
        return
    print(
        "\n| streams | tokens | mode | us/chunk | x bare | x aiohttp | us/stream "
        "| wall/ideal | ttft p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        for t in lengths:
            per = {
                m: _med(rs, "cpu") / max(1.0, _med(rs, "chunks")) * 1e6
                for (m, n2, t2), rs in results.items()
                if n2 == n and t2 == t
            }
            bare, peer = _ref(per, modes, "bare"), _ref(per, modes, "aiohttp")
            for m in modes:
                rs = results[(m, n, t)]
                us = per[m]
                xb = f"{us / bare:.2f}" if bare else "-"
                xa = f"{us / peer:.2f}" if peer else "-"
                ideal = rs[0]["ideal"]
                wall = f"{_med(rs, 'wall') / ideal:.2f}" if ideal else "-"
                print(
                    f"| {n} | {t} | {m} | {us:.1f} | {xb} | {xa} "
                    f"| {_med(rs, 'cpu') / n * 1e6:.0f} | {wall} "
                    f"| {_med(rs, 'ttft_p50') * 1e3:.1f} |"
                )
    if len(lengths) >= 2:
        short, long_ = min(lengths), max(lengths)
        print("\nMarginal costs from the two lengths (same stream count):")
        print("| streams | mode | us per extra chunk | us per stream set-up |")
        print("|---|---|---|---|")
        for n in sizes:
            for m in modes:
                a, b = results[(m, n, short)], results[(m, n, long_)]
                ca, cb = _med(a, "cpu"), _med(b, "cpu")
                ka, kb = _med(a, "chunks"), _med(b, "chunks")
                per_chunk = (cb - ca) / (kb - ka) if kb != ka else float("nan")
                setup = (ca - per_chunk * ka) / n
                print(f"| {n} | {m} | {per_chunk * 1e6:.1f} | {setup * 1e6:.0f} |")


if __name__ == "__main__":
    main()
