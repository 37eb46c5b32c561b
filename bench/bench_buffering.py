"""Benchmark: adaptive buffering (BDP windows, consumer isolation, memory, stall detection).

A tiny HTTP/2 NDJSON server (``h2`` on asyncio, below: bulk streams of large lines,
paced token streams, idle streams, stalls) runs with the chaos proxy in a child
process; the client (``StreamClient`` over ``MultiplexedTransport``) in this one.

    .venv/bin/python bench/bench_buffering.py              # all four, writes docs + plot
    .venv/bin/python bench/bench_buffering.py --only link  # one of: link isolation memory stall
    .venv/bin/python bench/bench_buffering.py --quick      # shorter runs, prints only

1. long fat link (latency:downstream:latency=100 + bandwidth:downstream:rate=25000,
   i.e. 100 ms RTT and 200 Mbit/s): adaptive windows vs a fixed 64 KiB window.
2. slow consumer isolation: 100 streams on one connection, one consumer stops 10 s.
3. memory: RSS per stream with 1000 idle-but-open and 1000 active streams.
4. stall detection at 50 and 2 tokens/s: adaptive idle timeout vs a fixed one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resilient_stream import StreamClient, StreamConfig  # noqa: E402
from resilient_stream.errors import StreamError  # noqa: E402
from resilient_stream.transport import MultiplexedTransport  # noqa: E402

KIB = 1024
MIB = 1024 * 1024
LINK_RATE = 25_000_000  # 200 Mbit/s in bytes/s (the bandwidth toxic's 25000 KB/s)
LONG_FAT = ["latency:downstream:latency=100", "bandwidth:downstream:rate=25000"]


# --- the tiny HTTP/2 NDJSON server -----------------------------------------------------------


def ndjson_line(text: str, done: bool = False, n: int = 0) -> bytes:
    tail = f',"done_reason":"stop","eval_count":{n}' if done else ""
    head = '{"model":"bench","created_at":"","response":'
    return f'{head}{json.dumps(text)},"done":{str(done).lower()}{tail}}}\n'.encode()


class BenchServer(asyncio.Protocol):
    """One h2c connection. The request's ``options`` pick what the stream does:

    ``{"mode": "bulk", "line_bytes": L, "seconds": S}``: lines of about L bytes, as fast
    as flow control allows, for S seconds; ``{"mode": "tokens", "rate": R, "n": N,
    "stall_after": K}``: N paced tokens (stall after K: stay open, silent);
    ``{"mode": "idle"}``: one token, then silence until the client resets the stream.
    """

    def __init__(self) -> None:
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.bodies: dict[int, bytearray] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 4000},
        )
        self.h2.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.bodies[ev.stream_id] = bytearray()
            elif isinstance(ev, h2.events.DataReceived):
                self.bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                body = json.loads(bytes(self.bodies.pop(ev.stream_id, b"")) or b"{}")
                self.tasks[ev.stream_id] = asyncio.get_running_loop().create_task(
                    self.serve(ev.stream_id, body)
                )
            elif isinstance(ev, h2.events.StreamReset):
                running = self.tasks.pop(ev.stream_id, None)
                if running is not None:
                    running.cancel()
                self.wake(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated):
                if ev.stream_id == 0:
                    for sid in list(self.waiters):
                        self.wake(sid)
                else:
                    self.wake(ev.stream_id)
        self.flush()

    def wake(self, sid: int) -> None:
        fut = self.waiters.pop(sid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks.values():
            task.cancel()

    async def send(self, sid: int, data: bytes, end: bool = False) -> None:
        h2c = self.h2
        view = memoryview(data)
        while view:
            n = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size, len(view))
            if n <= 0:
                fut = asyncio.get_running_loop().create_future()
                self.waiters[sid] = fut
                await fut
                continue
            h2c.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end:
            h2c.end_stream(sid)
            self.flush()

    async def serve(self, sid: int, body: dict[str, Any]) -> None:
        opts = body.get("options") or {}
        mode = opts.get("mode", "tokens")
        self.h2.send_headers(
            sid, [(b":status", b"200"), (b"content-type", b"application/x-ndjson")]
        )
        self.flush()
        loop = asyncio.get_running_loop()
        try:
            if mode == "bulk":
                line = ndjson_line("x" * int(opts.get("line_bytes", 65536)))
                batch = line * max(1, 262_144 // len(line))
                until = loop.time() + float(opts.get("seconds", 5.0))
                count = 0
                while loop.time() < until:
                    await self.send(sid, batch)
                    count += batch.count(b"\n")
                await self.send(sid, ndjson_line("", True, count), end=True)
            elif mode == "idle":
                await self.send(sid, ndjson_line("t"))
                await asyncio.Event().wait()  # until the client resets the stream
            else:
                rate = float(opts.get("rate", 20.0))
                n = int(opts.get("n", 100))
                stall_after = int(opts.get("stall_after", -1))
                start = loop.time()
                for i in range(n):
                    if i == stall_after:
                        await asyncio.Event().wait()
                    delay = start + i / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self.send(sid, ndjson_line(f"tok{i} "))
                await self.send(sid, ndjson_line("", True, n), end=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.tasks.pop(sid, None)


async def serve_forever(toxics: list[str], backlog: int) -> None:
    from resilient_stream.chaos import ChaosProxy
    from resilient_stream.chaos.connection import BACKLOG_HIGH

    # The proxy pauses reading past max_backlog bytes queued per direction; with
    # 100 ms of latency that caps throughput at max_backlog / 100 ms (see docs).
    max_backlog = backlog or BACKLOG_HIGH
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BenchServer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with ChaosProxy(f"127.0.0.1:{port}", toxics, max_backlog=max_backlog) as proxy:
        print(json.dumps({"server": f"http://127.0.0.1:{port}", "proxy": proxy.url}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    server.close()


@contextlib.asynccontextmanager
async def served(toxics: list[str], backlog: int = 0) -> AsyncIterator[dict[str, str]]:
    """Server + chaos proxy in a child process (its own CPU); yields their URLs."""
    args = [sys.executable, __file__, "--serve", "--backlog", str(backlog)]
    for t in toxics:
        args += ["--toxic", t]
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        yield json.loads(line)
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --- 1. long fat link ----------------------------------------------------------------------


async def bulk_run(url: str, seconds: float, **cfg: Any) -> dict[str, Any]:
    config = StreamConfig(max_connections=1, **cfg)
    transport = MultiplexedTransport(config)
    bins: list[int] = [0] * int(seconds * 4 + 8)
    windows: list[int] = [0] * len(bins)
    async with StreamClient(url, config=config, transport=transport) as client:
        stream = client.generate(
            model="bench",
            prompt="bulk",
            options={"mode": "bulk", "line_bytes": 65536, "seconds": seconds},
        )
        start = time.monotonic()
        total = 0
        async for chunk in stream:
            i = int((time.monotonic() - start) * 4)
            if i < len(bins):
                bins[i] += len(chunk.response)
                windows[i] = max(windows[i], transport.stats().stream_window_max)
            total += len(chunk.response)
        elapsed = time.monotonic() - start
        stats = transport.stats()
    rates = [b * 4 for b in bins[: int(seconds * 4)]]
    steady = rates[len(rates) // 2 :]
    reach = next((i / 4 for i, r in enumerate(rates) if r >= 0.85 * LINK_RATE), None)
    return {
        "total_bytes": total,
        "elapsed": elapsed,
        "mean_rate": total / elapsed,
        "steady_rate": sum(steady) / len(steady),
        "reach_85pct_s": reach,
        "rates": rates,
        "windows": windows[: len(rates)],
        "bdp": stats.bdp_max,
        "rtt": stats.rtt,
    }


async def bench_link(quick: bool) -> dict[str, Any]:
    seconds = 4.0 if quick else 8.0
    out: dict[str, Any] = {"seconds": seconds, "link_rate": LINK_RATE}
    fixed_64k = {"adaptive_windows": False, "initial_stream_window": 65_535}
    big_fixed = {"adaptive_windows": False, "initial_stream_window": 64 * MIB}
    # Can the proxy shape 200 Mbit/s at 100 ms? Windows out of the way (64 MiB fixed):
    for name, toxics, backlog in (
        ("bandwidth only, 64 MiB window", LONG_FAT[1:], 0),
        (
            "latency + bandwidth, 64 MiB window, proxy backlog 1 MiB (old default)",
            LONG_FAT,
            1 * MIB,
        ),
        ("latency + bandwidth, 64 MiB window, proxy backlog 16 MiB (default)", LONG_FAT, 0),
    ):
        async with served(toxics, backlog) as urls:
            r = await bulk_run(urls["proxy"], seconds, **big_fixed)
        out.setdefault("calibration", {})[name] = r["steady_rate"]
        print(f"  calibration: {name}: {r['steady_rate'] / 1e6:.1f} MB/s", flush=True)
    async with served(LONG_FAT) as urls:
        out["adaptive"] = await bulk_run(urls["proxy"], seconds)
        out["fixed_64k"] = await bulk_run(urls["proxy"], seconds, **fixed_64k)
    for name in ("adaptive", "fixed_64k"):
        r = out[name]
        print(
            f"  {name}: steady {r['steady_rate'] / 1e6:.2f} MB/s "
            f"({r['steady_rate'] / LINK_RATE:.0%} of link), mean {r['mean_rate'] / 1e6:.2f} MB/s, "
            f"85% reached at {r['reach_85pct_s']} s, bdp {r['bdp']}, rtt {r['rtt']:.3f}",
            flush=True,
        )
    return out


# --- 2. slow consumer isolation --------------------------------------------------------------


async def isolation_run(url: str, stop: bool, pause: float, tokens: int) -> dict[str, Any]:
    config = StreamConfig(max_connections=1)
    transport = MultiplexedTransport(config)
    gaps: list[float] = []
    window_start = 2.5
    window_end = window_start + pause - 0.5
    held: list[int] = []
    windows: list[int] = []
    async with StreamClient(url, config=config, transport=transport) as client:
        t0 = time.monotonic()

        async def paced() -> int:
            stream = client.generate(
                model="bench", prompt="t", options={"mode": "tokens", "rate": 20, "n": tokens}
            )
            last = None
            n = 0
            async for _ in stream:
                now = time.monotonic() - t0
                if last is not None and window_start <= now <= window_end:
                    gaps.append(now - last)
                last = now
                n += 1
            return n

        async def stopper() -> None:
            opts: dict[str, Any] = (
                {"mode": "bulk", "line_bytes": 16384, "seconds": pause + 4}
                if stop
                else {"mode": "tokens", "rate": 20, "n": tokens}
            )
            stream = client.generate(model="bench", prompt="s", options=opts)
            async for _ in stream:
                if stop and time.monotonic() - t0 >= 2.0:
                    break  # read at full speed for 2 s, then ...
            if stop:
                # ... stop reading for `pause` seconds, holding the stream open.
                for _ in range(int(pause * 10)):
                    await asyncio.sleep(0.1)
                    st = transport.stats()
                    held.append(st.buffered_bytes)
                    windows.append(st.stream_window_max)
            await stream.aclose()

        results = await asyncio.gather(stopper(), *(paced() for _ in range(99)))
        stats = transport.stats()
    gaps.sort()
    return {
        "completed": sum(1 for n in results[1:] if n == tokens + 1),
        "p50_gap": gaps[len(gaps) // 2],
        "p99_gap": gaps[int(len(gaps) * 0.99)],
        "gaps": len(gaps),
        "held_max": max(held, default=0),
        "window_max": max(windows, default=0),
        "connections": stats.connections_opened,
    }


async def bench_isolation(quick: bool) -> dict[str, Any]:
    pause = 4.0 if quick else 10.0
    tokens = int((pause + 4) * 20)
    out: dict[str, Any] = {"pause": pause, "tokens": tokens}
    async with served(["latency:downstream:latency=50"]) as urls:
        out["baseline"] = await isolation_run(urls["proxy"], False, pause, tokens)
        out["stopped"] = await isolation_run(urls["proxy"], True, pause, tokens)
    b, s = out["baseline"], out["stopped"]
    out["p99_change"] = s["p99_gap"] / b["p99_gap"] - 1
    print(
        f"  baseline p99 gap {b['p99_gap'] * 1e3:.1f} ms, with one consumer stopped "
        f"{s['p99_gap'] * 1e3:.1f} ms ({out['p99_change']:+.1%}); completed "
        f"{s['completed']}/99; held for the stopped stream {s['held_max']} B "
        f"(its window {s['window_max']} B)",
        flush=True,
    )
    return out


# --- 3. memory -----------------------------------------------------------------------------


async def memory_client(url: str, mode: str, streams: int) -> dict[str, Any]:
    import gc

    import psutil  # type: ignore[import-untyped]

    proc = psutil.Process()
    config = StreamConfig(max_connections=1, idle_timeout=60.0)
    transport = MultiplexedTransport(config)
    async with StreamClient(url, config=config, transport=transport) as client:
        warm = client.generate(model="bench", prompt="w", options={"mode": "tokens", "n": 2})
        await warm.collect()
        gc.collect()
        base = proc.memory_info().rss
        got_first = 0
        hold = asyncio.Event()

        async def one(i: int) -> None:
            nonlocal got_first
            opts: dict[str, Any] = (
                {"mode": "idle"} if mode == "idle" else {"mode": "tokens", "rate": 10, "n": 80}
            )
            stream = client.generate(model="bench", prompt=f"p{i}", options=opts)
            async for _ in stream:
                got_first += 1
                if mode == "idle":
                    break
            if mode == "idle":
                await hold.wait()  # keep the stream open (not read)
            await stream.aclose()

        tasks = [asyncio.create_task(one(i)) for i in range(streams)]
        for _ in range(600):
            await asyncio.sleep(0.05)
            if got_first >= streams * (1 if mode == "idle" else 20):
                break
        gc.collect()
        rss = proc.memory_info().rss
        stats = transport.stats()
        hold.set()
        await asyncio.gather(*tasks)
    return {
        "streams": streams,
        "open_streams": stats.streams_active,
        "rss_delta": rss - base,
        "per_stream": (rss - base) / streams,
        "buffered_bytes": stats.buffered_bytes,
        "base_rss": base,
    }


async def bench_memory(quick: bool) -> dict[str, Any]:
    streams = 300 if quick else 1000
    out: dict[str, Any] = {}
    async with served([]) as urls:
        for mode in ("idle", "active"):
            res = subprocess.run(  # noqa: ASYNC221 (the server runs in another process)
                [
                    sys.executable,
                    __file__,
                    "--memory-client",
                    mode,
                    "--url",
                    urls["server"],
                    "--streams",
                    str(streams),
                ],
                capture_output=True,
                text=True,
                timeout=180,
                check=True,
            )
            out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
            r = out[mode]
            print(
                f"  {mode}: {r['open_streams']} open, RSS +{r['rss_delta'] / MIB:.1f} MiB = "
                f"{r['per_stream'] / KIB:.1f} KiB/stream, buffered {r['buffered_bytes']} B",
                flush=True,
            )
    return out


# --- 4. stall detection ----------------------------------------------------------------------


async def stall_run(url: str, rate: float, adaptive: bool, idle_timeout: float) -> float:
    config = StreamConfig(adaptive_idle_timeout=adaptive, idle_timeout=idle_timeout, max_attempts=1)
    stall_after = int(rate * 8) if rate < 10 else int(rate * 2)
    async with StreamClient(url, config=config) as client:
        stream = client.generate(
            model="bench",
            prompt="s",
            options={
                "mode": "tokens",
                "rate": rate,
                "n": stall_after * 4,
                "stall_after": stall_after,
            },
        )
        last = time.monotonic()
        try:
            async for _ in stream:
                last = time.monotonic()
        except StreamError:
            return time.monotonic() - last
    return float("nan")  # not detected (the stream ended)


async def bench_stall(quick: bool) -> dict[str, Any]:
    fixed = 10.0 if quick else 30.0
    runs = [
        (rate, adaptive, f"{rate:g} tok/s, {'adaptive' if adaptive else f'fixed {fixed:g} s'}")
        for rate in (50.0, 2.0)
        for adaptive in (True, False)
    ]
    async with served([]) as urls:
        times = await asyncio.gather(
            *(stall_run(urls["server"], rate, adaptive, fixed) for rate, adaptive, _ in runs)
        )
    out: dict[str, Any] = {"fixed_timeout": fixed}
    for (_, _, name), t in zip(runs, times, strict=True):
        out[name] = t
        print(f"  {name}: detected after {t:.2f} s", flush=True)
    return out


# --- report --------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    link = results.get("link")
    if link:
        for name, label in (("adaptive", "adaptive windows"), ("fixed_64k", "fixed 64 KiB window")):
            rates = link[name]["rates"]
            ax1.plot([i / 4 for i in range(len(rates))], [r * 8 / 1e6 for r in rates], label=label)
        ax1.axhline(LINK_RATE * 8 / 1e6, color="gray", ls="--", label="link rate (200 Mbit/s)")
        shaped = link.get("calibration", {}).get("bandwidth only, 64 MiB window")
        if shaped:
            ax1.axhline(shaped * 8 / 1e6, color="C2", ls="-.", label="bandwidth toxic, no latency")
        ax1.axhline(0.85 * LINK_RATE * 8 / 1e6, color="gray", ls=":", label="85% of link")
        ax1.set_xlabel("seconds")
        ax1.set_ylabel("goodput (Mbit/s)")
        ax1.set_title("Long fat link: 100 ms RTT, 200 Mbit/s (chaos proxy)")
        ax1.legend(loc="center right", fontsize=8)
    stall = results.get("stall")
    if stall:
        names = [k for k in stall if k != "fixed_timeout"]
        ax2.barh(names, [stall[k] for k in names], color=["C0", "C1", "C0", "C1"])
        ax2.set_xlabel("seconds from the last token to detection")
        ax2.set_title("Stall detection")
        for i, k in enumerate(names):
            ax2.text(stall[k], i, f" {stall[k]:.2f} s", va="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    benches = {
        "link": bench_link,
        "isolation": bench_isolation,
        "memory": bench_memory,
        "stall": bench_stall,
    }
    for name, fn in benches.items():
        if args.only and name not in args.only:
            continue
        print(f"{name}:", flush=True)
        results[name] = await fn(args.quick)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs; print only")
    parser.add_argument("--only", action="append", help="link, isolation, memory or stall")
    parser.add_argument("--out", default=str(ROOT / "bench" / "bench_buffering_results.json"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--toxic", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--backlog", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--memory-client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_forever(args.toxic, args.backlog))
        return
    if args.memory_client:
        print(json.dumps(asyncio.run(memory_client(args.url, args.memory_client, args.streams))))
        return
    results = asyncio.run(main_async(args))
    if not args.quick:
        out = Path(args.out)
        previous = json.loads(out.read_text()) if out.exists() else {}
        previous.update(results)
        out.write_text(json.dumps(previous, indent=1))
        plot(previous, ROOT / "docs" / "img" / "buffering.png")
        print(f"wrote {out} and docs/img/buffering.png", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
