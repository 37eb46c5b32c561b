"""End to end: what a service pays per token and per stream on each user-facing path.

StreamClient, the ollama drop-in, ResilientTransport under the official ollama and
openai SDKs, the bare MultiplexedTransport loop, aiohttp + msgspec, the official
ollama client and the openai SDK on stock httpx, side by side in one run, at 300 to
10,000 concurrent streams, short (40 tokens) and long (400 tokens), paced like a GPU
server (per-stream token rate, time to first token, jitter). The reference server
runs in its own process (its CPU is measured per run, so a busy server shows); each
path runs in its own subprocess, so CPU (time.process_time) and RSS are its own.

    .venv/bin/python bench/bench_e2e.py            # default run (~15 min): results + docs + plot
    .venv/bin/python bench/bench_e2e.py --quick    # ~2-3 min smoke run (e2e-quick.json)
    .venv/bin/python bench/bench_e2e.py --sizes 3000,10000 --lengths long --budget 300 --merge

Per-stream rate: min(50, 20000 / streams) tokens/s (a GPU fleet whose per-stream rate
falls as batches grow; the aggregate stays <= 20k tokens/s so that the server, at
~15 us of CPU per paced chunk, needs about a third of a core). A cell whose ideal or
predicted wall time (from the path's own earlier cell) exceeds --budget is skipped
with the reason in the table, so slow peers do not run for hours.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e_report import plot, render, write_docs  # noqa: E402

LENGTHS = {"short": 40, "long": 400}


@dataclass
class Cell:
    streams: int
    length: str
    tps: float
    ttft: float
    jitter: float

    @property
    def tokens(self) -> int:
        return LENGTHS[self.length]

    @property
    def ideal(self) -> float:
        """The last token's due time: first token after ``ttft``, then a gap per token."""
        return self.ttft + (self.tokens - 1) / self.tps

    @property
    def key(self) -> str:
        return f"{self.streams} x {self.length}"


@dataclass
class Result:
    path: str
    streams: int
    length: str
    tps: float
    ideal_s: float
    chunks: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    setup_cpu_s: float = 0.0
    setup_chunks: int = 0
    ttft_p50_ms: float = math.nan
    ttft_p99_ms: float = math.nan
    rss_base_mb: float = 0.0
    rss_peak_mb: float = 0.0
    server_cpu_s: float = 0.0
    #: Time spent runnable but waiting for a CPU (/proc/PID/schedstat): machine contention.
    server_wait_s: float = 0.0
    client_wait_s: float = 0.0
    #: CPU the cyclic garbage collector took in the client (all generations, and the
    #: full collections alone), and how many full collections ran.
    gc_s: float = 0.0
    gc_full_s: float = 0.0
    gc_full: int = 0
    error: str = ""
    #: The commit measured (cells of one file can come from --merge runs).
    commit: str = ""

    @property
    def us_per_chunk(self) -> float:
        return self.cpu_s / self.chunks * 1e6 if self.chunks else math.nan

    @property
    def setup_us(self) -> float:
        """Set-up CPU per stream: the CPU until every stream had its first chunk, less
        the chunks decoded by then at the steady per-chunk cost of the rest of the run."""
        if not self.setup_cpu_s or self.setup_chunks * 2 > self.chunks:
            return math.nan  # streams queued (a pool limit): set-up is not a phase of its own
        steady = (self.cpu_s - self.setup_cpu_s) / (self.chunks - self.setup_chunks)
        return (self.setup_cpu_s - self.setup_chunks * steady) / self.streams * 1e6

    @property
    def kb_per_stream(self) -> float:
        return (self.rss_peak_mb - self.rss_base_mb) * 1024 / self.streams

    @property
    def server_share(self) -> float:
        return self.server_cpu_s / self.wall_s if self.wall_s else math.nan


# --- child modes -----------------------------------------------------------------------


def serve(tps: float, ttft: float, jitter: float, port_file: str) -> None:
    from resilient_stream.refserver.server import ReferenceServer

    async def main() -> None:
        async with ReferenceServer(
            port=0,
            tokens_per_second=tps,
            first_token_delay=ttft,
            jitter=jitter,
            seed=1,
            stop_probability=0.0,
            max_concurrent_streams=100,
        ) as srv:
            Path(port_file).write_text(str(srv.port))  # noqa: ASYNC240 (once, at start)
            await asyncio.Event().wait()

    asyncio.run(main())


def run_queue_wait(pid: int | str = "self") -> float:
    """Seconds this process has spent runnable but not running (waiting for a CPU)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class GcClock:
    """Process CPU the cyclic garbage collector takes, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = self.full = 0.0
        self.full_count = 0
        self._t0 = 0.0
        self.on = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.process_time()
        elif self.on:
            dt = time.process_time() - self._t0
            self.total += dt
            if info["generation"] == 2:
                self.full += dt
                self.full_count += 1


def client(path: str, url: str, streams: int, tokens: int, collect: bool = True) -> None:
    import resource

    # Only this path's stack is imported (by the warm-up), so peak RSS is its own.
    from bench_e2e_paths import PATHS, Probe

    run = PATHS[path][1]

    async def main() -> dict[str, float]:
        await run(url, 2, 2, None)  # warm-up: imports, first-call caches (not measured)
        gc.collect()
        if not collect:
            gc.disable()  # --no-gc: what the run costs without the cyclic collector
        base = _rss_mb()
        probe = Probe(streams)
        collector = GcClock()
        gc.callbacks.append(collector)
        collector.on = True
        wait0, cpu0, wall0 = run_queue_wait(), time.process_time(), time.perf_counter()
        chunks = await run(url, streams, tokens, probe)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        collector.on = False
        wait = run_queue_wait() - wait0
        ttft = sorted(probe.ttft)
        return {
            "chunks": chunks,
            "cpu_s": cpu,
            "wall_s": wall,
            "setup_cpu_s": probe.setup_cpu - cpu0 if probe.setup_cpu else 0.0,
            "setup_chunks": probe.setup_chunks,
            "ttft_p50_ms": ttft[len(ttft) // 2] * 1e3,
            "ttft_p99_ms": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] * 1e3,
            "client_wait_s": wait,
            "gc_s": collector.total,
            "gc_full_s": collector.full,
            "gc_full": collector.full_count,
            "rss_base_mb": base,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    print(json.dumps(asyncio.run(main())))


# --- orchestration ---------------------------------------------------------------------


def start_server(cell: Cell) -> tuple[subprocess.Popen[bytes], str]:
    port_file = f"/tmp/bench_e2e_port_{os.getpid()}"
    Path(port_file).unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--serve", "--port-file", port_file]
    cmd += ["--tps", str(cell.tps), "--ttft", str(cell.ttft), "--jitter", str(cell.jitter)]
    proc = subprocess.Popen(cmd)
    for _ in range(400):
        if Path(port_file).exists() and Path(port_file).read_text():
            break
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(0.05)
    else:
        proc.kill()
        proc.wait()
        raise RuntimeError("server did not start within 20 s")
    port = Path(port_file).read_text().strip()
    Path(port_file).unlink(missing_ok=True)
    return proc, f"http://127.0.0.1:{port}"


def run_child(
    path: str, url: str, cell: Cell, server_pid: int, timeout: float, collect: bool = True
) -> Result:
    import psutil  # type: ignore[import-untyped]

    res = Result(path, cell.streams, cell.length, cell.tps, cell.ideal)
    server = psutil.Process(server_pid)
    scpu0, swait0 = sum(server.cpu_times()[:2]), run_queue_wait(server_pid)
    cmd = [sys.executable, __file__, "--client", path, "--url", url]
    cmd += ["--streams", str(cell.streams), "--tokens", str(cell.tokens)]
    cmd += [] if collect else ["--no-gc"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, text=True)
    except subprocess.TimeoutExpired:
        res.error = f"did not finish within {timeout:.0f} s"
        res.wall_s = timeout
        return res
    res.server_cpu_s = sum(server.cpu_times()[:2]) - scpu0
    res.server_wait_s = run_queue_wait(server_pid) - swait0
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        res.error = "failed: " + tail[0][:140]
        return res
    data = json.loads(out.stdout.strip().splitlines()[-1])
    for k, v in data.items():
        setattr(res, k, v)
    expected = cell.streams * cell.tokens
    if res.chunks < expected:
        res.error = f"only {res.chunks} chunks, expected >= {expected}"
    return res


def skip_reason(path: str, cell: Cell, done: list[Result], budget: float) -> str:
    """Why a cell is not run (empty: run it): its ideal or its predicted wall time,
    from the path's own last finished cell, is over the budget."""
    from bench_e2e_paths import POOL_LIMITS

    if cell.ideal > budget:
        return f"ideal {cell.ideal:.0f} s > budget {budget:.0f} s"
    waves = math.ceil(cell.streams / POOL_LIMITS.get(path, cell.streams))
    if waves > 1 and cell.ideal * waves > budget:
        return (
            f"its pool of {POOL_LIMITS[path]} connections runs {cell.streams} streams in "
            f"{waves} waves: >= {cell.ideal * waves:.0f} s > budget {budget:.0f} s"
        )
    same = [r for r in done if r.path == path and r.length == cell.length]
    lost = [r for r in same if r.streams < cell.streams and not r.error.startswith("skipped")]
    lost = [r for r in lost if r.error]
    if lost:
        r = lost[-1]
        return f"at {r.streams:,} x {r.length}: {r.error[:80]}; more streams would not fit"
    cpu, last = predicted_cpu(path, cell, done)
    if last is not None and cpu > budget:
        return (
            f"~{cpu:.0f} s of CPU at {last.us_per_chunk:.0f} us/chunk "
            f"(measured at {last.streams:,} x {last.length}) > budget {budget:.0f} s"
        )
    return ""


def predicted_cpu(path: str, cell: Cell, done: list[Result]) -> tuple[float, Result | None]:
    """The cell's CPU at the per-chunk cost of the path's last finished cell."""
    prior = [r for r in done if r.path == path and r.chunks and not r.error]
    if not prior:
        return 0.0, None
    last = prior[-1]
    return last.us_per_chunk * 1e-6 * cell.streams * (cell.tokens + 1), last


def timeout_for(path: str, cell: Cell, done: list[Result]) -> float:
    """Generous (a shared machine stretched runs 3-8x): the run is killed only
    when it is far off what its ideal and its predicted CPU say."""
    from bench_e2e_paths import POOL_LIMITS

    waves = math.ceil(cell.streams / POOL_LIMITS.get(path, cell.streams))
    return max(180.0, 6 * cell.ideal * waves, 8 * predicted_cpu(path, cell, done)[0])


def save(out: Path, meta: dict[str, object], results: list[Result]) -> None:
    """Write the results (after every cell, so a stopped run keeps what it measured)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) | {"us_per_chunk": r.us_per_chunk, "setup_us": r.setup_us} for r in results]
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, default=str) + "\n")


def git_commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench_e2e_paths import PATHS

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="300 and 1000 short, 300 long (~2-3 min)")
    ap.add_argument("--sizes", default="300,1000,3000,10000", help="concurrent streams per cell")
    ap.add_argument("--lengths", default="short,long", help="short (40 tokens), long (400)")
    ap.add_argument("--paths", default=",".join(PATHS), help="client paths, in table order")
    ap.add_argument("--budget", type=float, default=45.0, help="max wall s per run (%(default)s)")
    ap.add_argument("--aggregate", type=float, default=20000.0, help="max tokens/s, all streams")
    ap.add_argument("--max-tps", type=float, default=50.0, help="max tokens/s per stream")
    ap.add_argument("--ttft", type=float, default=0.1, help="server's first-token delay, s")
    ap.add_argument("--jitter", type=float, default=0.2, help="+- fraction of each token gap")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/e2e.json)")
    ap.add_argument("--merge", action="store_true", help="replace only the cells run in --out")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/ (table printed)")
    ap.add_argument("--from-json", action="store_true", help="rebuild docs and plot from --out")
    ap.add_argument("--commit", default=None, help="commit to record (default: git HEAD)")
    ap.add_argument(
        "--no-gc",
        action="store_true",
        help="clients run with the cyclic garbage collector off (what it costs; not a default)",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port-file", help=argparse.SUPPRESS)
    ap.add_argument("--tps", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--streams", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--tokens", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    unknown = [p for p in args.paths.split(",") if p and p not in PATHS]
    unknown += [n for n in args.lengths.split(",") if n and n not in LENGTHS]
    if unknown:
        ap.error(f"unknown path or length: {', '.join(unknown)}")
    return args


def cells(args: argparse.Namespace) -> list[Cell]:
    if args.quick:
        plan = [(300, "short"), (1000, "short"), (300, "long")]
    else:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        plan = [(n, ln) for ln in args.lengths.split(",") if ln for n in sizes]
    return [
        Cell(n, ln, min(args.max_tps, args.aggregate / n), args.ttft, args.jitter) for n, ln in plan
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.tps, args.ttft, args.jitter, args.port_file)
        return 0
    if args.client:
        client(args.client, args.url, args.streams, args.tokens, collect=not args.no_gc)
        return 0
    default_out = "e2e-quick.json" if args.quick else "e2e.json"
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / default_out
    paths = [p for p in args.paths.split(",") if p]
    results: list[Result] = []
    meta = {"commit": args.commit or git_commit(), "cpus": os.cpu_count(), "argv": sys.argv[1:]}
    if args.from_json or args.merge:
        saved = json.loads(out.read_text()) if out.exists() else {"results": []}
        fields = set(Result.__dataclass_fields__)
        results = [Result(**{k: v for k, v in d.items() if k in fields}) for d in saved["results"]]
        meta = saved.get("meta", meta) if args.from_json else meta
    todo = [] if args.from_json else cells(args)
    for cell in todo:
        server, url = start_server(cell)
        try:
            for path in paths:
                results = [
                    r
                    for r in results
                    if (r.path, r.streams, r.length) != (path, cell.streams, cell.length)
                ]
                reason = skip_reason(path, cell, results, args.budget)
                if reason:
                    r = Result(path, cell.streams, cell.length, cell.tps, cell.ideal)
                    r.error = "skipped: " + reason
                else:
                    r = run_child(
                        path, url, cell, server.pid, timeout_for(path, cell, results),
                        collect=not args.no_gc,
                    )  # fmt: skip
                    r.commit = str(meta["commit"])
                results.append(r)
                print(
                    f"{cell.key:14} {cell.tps:5.1f} tok/s {path:12} {r.us_per_chunk:7.1f} us/chunk "
                    f"setup {r.setup_us:7.0f} us  wall {r.wall_s:6.2f}/{cell.ideal:.2f} s  "
                    f"rss {r.rss_peak_mb:5.0f} MB {r.kb_per_stream:5.1f} KB/stream  "
                    f"ttft {r.ttft_p50_ms:6.1f}/{r.ttft_p99_ms:6.1f} ms  "
                    f"server {r.server_share * 100:3.0f}%  {r.error}",
                    flush=True,
                )
            save(out, meta | {"merged": args.merge, "partial": True}, results)
        finally:
            server.kill()
            server.wait()
        time.sleep(1.0)  # let the server's sockets go before the next cell
    if not args.from_json:
        save(out, meta | {"merged": args.merge}, results)
    ttft_file = ROOT / "bench" / "results" / "ttft.json"
    ttft = json.loads(ttft_file.read_text()) if ttft_file.exists() else None
    md = render(results, meta, ttft)
    print(md)
    if not (args.quick or args.no_docs):
        plot(results, ROOT / "docs" / "img" / "bench_e2e.png")
        write_docs(ROOT / "docs" / "benchmarks.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
