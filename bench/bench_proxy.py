"""Chaos proxy overhead with no toxics: added round-trip latency and throughput.

    .venv/bin/python bench/bench_proxy.py [--round-trips 5000] [--megabytes 256]

Three processes, all on 127.0.0.1: an upstream server (echo / blast), the
proxy (``resilient-stream proxy``, a separate process as users run it), and
this client (blocking sockets, TCP_NODELAY). Each measurement runs direct to
the upstream and through the proxy in the same run, side by side:

- latency: ping-pong round trips of a 64-byte message, median and p99 (us);
- throughput: one connection reading N MB the upstream sends as fast as it
  can (MB/s), plus the proxy process's CPU seconds per GB.

"pipeline" is the proxy with a ``latency=0`` toxic: every chunk goes through
the sans-I/O toxic pipeline instead of the no-toxic fast path.
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
from contextlib import contextmanager

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
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs (best kept)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0

    py = sys.executable
    nbytes = args.megabytes * 1_000_000
    with process([py, __file__, "--serve"]) as (_, line):
        upstream = int(line)
        rows = []
        targets: list[tuple[str, list[str]]] = [
            ("direct", []),
            ("proxy", []),
            ("proxy+pipeline", ["--toxic", "latency:downstream:latency=0"]),
        ]
        for label, extra in targets:
            if label == "direct":
                port, cpu_proc = upstream, None
                ctx = None
            else:
                cmd = [py, "-m", "resilient_stream.cli", "proxy", "--listen", "127.0.0.1:0"]
                cmd += ["--upstream", f"127.0.0.1:{upstream}", *extra]
                ctx = process(cmd)
                proc, first = ctx.__enter__()
                port = int(first.split()[4].rsplit(":", 1)[1])
                cpu_proc = psutil.Process(proc.pid)
            try:
                rtt = round_trips(port, args.round_trips)
                cpu0 = sum(cpu_proc.cpu_times()[:2]) if cpu_proc else 0.0
                mbps = max(throughput(port, nbytes) for _ in range(args.repeat))
                cpu = (sum(cpu_proc.cpu_times()[:2]) - cpu0) if cpu_proc else 0.0
            finally:
                if ctx is not None:
                    ctx.__exit__(None, None, None)
            gb = nbytes * args.repeat / 1e9
            rows.append(
                (
                    label,
                    statistics.median(rtt) * 1e6,
                    pct(rtt, 0.99) * 1e6,
                    mbps,
                    cpu / gb if cpu_proc else float("nan"),
                )
            )

    base_med, base_p99, base_mbps = rows[0][1], rows[0][2], rows[0][3]
    print(f"cpus={os.cpu_count()} round_trips={args.round_trips} megabytes={args.megabytes}")
    head = (
        f"{'path':<16}{'rtt p50 us':>11}{'p99 us':>9}{'added p50':>11}{'added p99':>11}"
        f"{'MB/s':>9}{'vs direct':>11}{'proxy CPU s/GB':>16}"
    )
    print(head)
    for label, med, p99, mbps, cpu_gb in rows:
        print(
            f"{label:<16}{med:>11.1f}{p99:>9.1f}{med - base_med:>11.1f}{p99 - base_p99:>11.1f}"
            f"{mbps:>9.0f}{mbps / base_mbps:>11.2f}{cpu_gb:>16.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
