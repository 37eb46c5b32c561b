"""Chaos proxy overhead with no toxics: added round-trip latency and throughput.

    .venv/bin/python bench/bench_proxy.py [--round-trips 5000] [--megabytes 128] [--rounds 5]

Three processes, all on 127.0.0.1: an upstream server (echo / blast), the
proxy (``resilient-stream proxy``, a separate process as users run it), and
this client (blocking sockets, TCP_NODELAY). Every path is measured in the
same run, side by side, interleaved round by round so that other load on the
machine hits all of them alike:

- latency: ping-pong round trips of a 64-byte message, median and p99 (us),
  and what the proxy adds to the direct path;
- throughput: one connection reading N MB that the upstream sends as fast as
  it can (median MB/s over the rounds), plus the proxy process's CPU seconds
  per GB.

"direct" talks to the upstream, "proxy" goes through the proxy with no toxic
(the fast path: bytes copied from one transport to the other), and
"proxy+pipeline" has a ``latency=0`` toxic, so every chunk goes through the
sans-I/O toxic pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psutil

CHUNK = 256 * 1024


# --- upstream server (runs in its own process) ------------------------------------


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    mode = await reader.readexactly(1)
    if mode == b"E":  # echo until EOF
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    elif mode == b"B":  # blast N bytes then close
        remaining = int.from_bytes(await reader.readexactly(8), "big")
        block = b"x" * CHUNK
        while remaining > 0:
            writer.write(block[: min(remaining, CHUNK)])
            remaining -= CHUNK
            await writer.drain()
    writer.close()


async def _serve() -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# --- client side -------------------------------------------------------------------


@contextmanager
def process(args: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(port: int, n: int) -> list[float]:
    sock = connect(port)
    sock.sendall(b"E")
    msg = b"p" * 64
    times = []
    with sock:
        for i in range(n + 200):
            start = time.perf_counter()
            sock.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(sock.recv(65536))
            if i >= 200:  # warm-up excluded
                times.append(time.perf_counter() - start)
    return times


def throughput(port: int, nbytes: int) -> float:
    sock = connect(port)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with sock:
        start = time.perf_counter()
        sock.sendall(b"B" + nbytes.to_bytes(8, "big"))
        got = 0
        while got < nbytes:
            n = sock.recv_into(view)
            if not n:
                break
            got += n
        elapsed = time.perf_counter() - start
    assert got == nbytes, f"short read: {got} of {nbytes}"
    return nbytes / elapsed / 1e6


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=5000, help="per path, in total")
    parser.add_argument("--megabytes", type=int, default=128, help="per throughput run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0

    py = sys.executable
    nbytes = args.megabytes * 1_000_000
    paths: list[tuple[str, list[str] | None]] = [
        ("direct", None),
        ("proxy", []),
        ("proxy+pipeline", ["--toxic", "latency:downstream:latency=0"]),
    ]
    with ExitStack() as stack:
        _, line = stack.enter_context(process([py, __file__, "--serve"]))
        upstream = int(line)
        ports: dict[str, int] = {}
        cpu: dict[str, psutil.Process] = {}
        for label, extra in paths:
            if extra is None:
                ports[label] = upstream
                continue
            cmd = [py, "-m", "resilient_stream.cli", "proxy", "--listen", "127.0.0.1:0"]
            cmd += ["--upstream", f"127.0.0.1:{upstream}", *extra]
            proc, first = stack.enter_context(process(cmd))
            ports[label] = int(first.split()[4].rsplit(":", 1)[1])
            cpu[label] = psutil.Process(proc.pid)
        # Interleave the paths round by round, so load from elsewhere on the
        # machine hits all of them alike.
        rtts: dict[str, list[float]] = {label: [] for label, _ in paths}
        mbps: dict[str, list[float]] = {label: [] for label, _ in paths}
        cpu_s: dict[str, float] = dict.fromkeys(cpu, 0.0)
        per_round = max(args.round_trips // args.rounds, 1)
        for _ in range(args.rounds):
            for label, _ in paths:
                rtts[label] += round_trips(ports[label], per_round)
                before = sum(cpu[label].cpu_times()[:2]) if label in cpu else 0.0
                mbps[label].append(throughput(ports[label], nbytes))
                if label in cpu:
                    cpu_s[label] += sum(cpu[label].cpu_times()[:2]) - before

    base = paths[0][0]
    base_med = statistics.median(rtts[base])
    base_p99 = pct(rtts[base], 0.99)
    base_mbps = statistics.median(mbps[base])
    gb = nbytes * args.rounds / 1e9
    print(
        f"cpus={os.cpu_count()} round_trips={per_round * args.rounds} per path, "
        f"throughput {args.rounds} x {args.megabytes} MB per path, interleaved"
    )
    print(
        f"{'path':<16}{'rtt p50 us':>11}{'p99 us':>9}{'added p50':>11}{'added p99':>11}"
        f"{'MB/s p50':>10}{'vs direct':>11}{'proxy CPU s/GB':>16}"
    )
    for label, _ in paths:
        med, p99 = statistics.median(rtts[label]), pct(rtts[label], 0.99)
        rate = statistics.median(mbps[label])
        cpu_gb = f"{cpu_s[label] / gb:.2f}" if label in cpu_s else "-"
        print(
            f"{label:<16}{med * 1e6:>11.1f}{p99 * 1e6:>9.1f}{(med - base_med) * 1e6:>11.1f}"
            f"{(p99 - base_p99) * 1e6:>11.1f}{rate:>10.0f}{rate / base_mbps:>11.2f}{cpu_gb:>16}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
