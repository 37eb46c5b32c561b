"""Time to first token the library adds, under load: probes between 1,000 live streams.

bench_e2e.py starts every stream of a cell at once, so its TTFT p50 is mostly the
time the loop takes to set up half of the cell's streams: it moves by +-30 ms from
run to run and cannot resolve the 1 ms goal of issue 14. This bench asks the question
the goal asks instead: with ``--load`` streams flowing (a bare MultiplexedTransport
loop, paced like bench_e2e's 1,000-stream cells: 20 tokens/s each), how much later
does a *new* stream's first chunk reach the caller on StreamClient than on the bare
transport loop?

Probe streams arrive one at a time every ``--interval`` seconds, alternating between
the two paths, so both see the same load at the same moments; each probe's TTFT is
from the call to its first decoded chunk (the server's first-token delay included).
The result is the difference of the two paths' p50, with a bootstrap 95% interval
(2,000 resamples), and the loop's lag while the probes ran.

    .venv/bin/python bench/bench_ttft.py                       # ~40 s
    .venv/bin/python bench/bench_ttft.py --load 1000 --probes 400 --interval 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import Cell, start_server
from bench_e2e_paths import Lines, _config, body_bytes

from resilient_stream import StreamClient
from resilient_stream.transport import MultiplexedTransport

RESULTS = Path(__file__).resolve().parent / "results" / "ttft.json"


async def _bare_stream(client: httpx.AsyncClient, url: str, i: int, tokens: int) -> float:
    """One bare-loop stream; seconds from the call to its first decoded chunk."""
    t0 = time.perf_counter()
    first = 0.0
    lines = Lines()
    async with client.stream("POST", url + "/api/generate", content=body_bytes(i, tokens)) as r:
        async for data in r.aiter_raw():
            if lines.feed(data) and not first:
                first = time.perf_counter() - t0
    if not lines.done:
        raise RuntimeError("stream ended without done: true")
    return first


async def _sc_stream(client: StreamClient, i: int, tokens: int) -> float:
    t0 = time.perf_counter()
    first = 0.0
    async for _ in client.generate(
        model="bench", prompt=f"probe {i}", options={"num_predict": tokens}
    ):
        if not first:
            first = time.perf_counter() - t0
    return first


async def _lag(stop: asyncio.Event, samples: list[float], every: float = 0.01) -> None:
    """How late the loop runs a callback scheduled ``every`` seconds ahead."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(every)
        samples.append(loop.time() - t - every)


def _p50(xs: list[float]) -> float:
    return statistics.median(xs)


def _boot(a: list[float], b: list[float], n: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of p50(a) - p50(b)."""
    rng = random.Random(1)
    diffs = sorted(
        _p50(rng.choices(a, k=len(a))) - _p50(rng.choices(b, k=len(b))) for _ in range(n)
    )
    return diffs[int(n * 0.025)], diffs[int(n * 0.975)]


async def run(url: str, load: int, probes: int, interval: float, rate: float) -> dict[str, object]:
    duration = probes * interval
    load_tokens = int(rate * (duration + 15))  # outlasts the ramp and the probes
    cfg = _config()
    load_http = httpx.AsyncClient(transport=MultiplexedTransport(cfg), timeout=None)
    probe_http = httpx.AsyncClient(transport=MultiplexedTransport(cfg), timeout=None)
    sc = StreamClient(url, config=cfg)
    try:
        # warm both probe paths (connections, first-call caches)
        for k in range(3):
            await _bare_stream(probe_http, url, -1 - k, 2)
            await _sc_stream(sc, -1 - k, 2)
        loads = [
            asyncio.ensure_future(_bare_stream(load_http, url, i, load_tokens)) for i in range(load)
        ]
        await asyncio.sleep(3.0)  # the load's set-up is over; its streams flow
        stop = asyncio.Event()
        lag: list[float] = []
        lagger = asyncio.ensure_future(_lag(stop, lag))
        ttft: dict[str, list[float]] = {"streamclient": [], "bare": []}
        tasks: list[asyncio.Future[None]] = []

        async def probe(i: int) -> None:
            if i % 2:
                ttft["streamclient"].append(await _sc_stream(sc, i, 2))
            else:
                ttft["bare"].append(await _bare_stream(probe_http, url, i, 2))

        for i in range(2 * probes):
            tasks.append(asyncio.ensure_future(probe(i)))
            await asyncio.sleep(interval / 2)
        await asyncio.gather(*tasks)
        stop.set()
        await lagger
        live = sum(1 for t in loads if not t.done())
        for t in loads:
            t.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
    finally:
        await sc.aclose()
        await probe_http.aclose()
        await load_http.aclose()
    sc_t, bare_t = ttft["streamclient"], ttft["bare"]
    low, high = _boot(sc_t, bare_t)
    lag.sort()
    return {
        "load_streams": load,
        "load_streams_live_at_end": live,
        "probes_per_path": probes,
        "interval_s": interval,
        "rate_tps": rate,
        "streamclient_p50_ms": _p50(sc_t) * 1e3,
        "bare_p50_ms": _p50(bare_t) * 1e3,
        "added_p50_ms": (_p50(sc_t) - _p50(bare_t)) * 1e3,
        "added_p50_ci95_ms": [low * 1e3, high * 1e3],
        "streamclient_p90_ms": sorted(sc_t)[int(len(sc_t) * 0.9)] * 1e3,
        "bare_p90_ms": sorted(bare_t)[int(len(bare_t) * 0.9)] * 1e3,
        "loop_lag_p50_ms": lag[len(lag) // 2] * 1e3,
        "loop_lag_p99_ms": lag[int(len(lag) * 0.99)] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=1000, help="streams flowing meanwhile")
    ap.add_argument("--probes", type=int, default=300, help="probe streams per path")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between probes, per path")
    ap.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    ap.add_argument("--ttft", type=float, default=0.1, help="server's first-token delay, s")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cell = Cell(streams=args.load, length="short", tps=args.rate, ttft=args.ttft, jitter=0.2)
    proc, url = start_server(cell)
    try:
        result = asyncio.run(run(url, args.load, args.probes, args.interval, args.rate))
    finally:
        proc.kill()
        proc.wait()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
