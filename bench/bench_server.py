"""How many chunks/s the reference server serves on one core, over HTTP/1.1 and HTTP/2.

The server runs in its own process (``resilient-stream serve``); the load
comes from minimal asyncio clients (raw h2 state machine / hand-written
HTTP/1.1) that only count lines, so the client stays cheap. The number that
matters is the server's CPU time per chunk (read from /proc via psutil),
which gives its one-core ceiling even when the client is the one that is
CPU-bound (both share the machine).

    .venv/bin/python bench/bench_server.py            # all scenarios, ~1 minute
    .venv/bin/python bench/bench_server.py --quick    # smaller, ~20 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.settings
import psutil  # type: ignore[import-untyped]


def body(num_predict: int, i: int) -> bytes:
    opts = {"num_predict": num_predict}
    return json.dumps({"model": "bench", "prompt": f"bench {i}", "options": opts}).encode()


# --- clients ------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.lines = 0
        self.streams_done = 0


class H2Client(asyncio.Protocol):
    """A raw h2 client connection that opens streams and counts NDJSON lines."""

    def __init__(self, counter: Counter, streams: int, num_predict: int, done: asyncio.Event):
        self.c = counter
        self.todo = streams
        self.num_predict = num_predict
        self.done = done
        self.open = 0
        self.unacked = 0
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.next_i = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.conn.increment_flow_control_window(2**30)
        transport.write(self.conn.data_to_send())

    def start_streams(self, n: int) -> None:
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            payload = body(self.num_predict, self.next_i)
            self.next_i += 1
            self.conn.send_headers(
                sid,
                [
                    (b":method", b"POST"),
                    (b":path", b"/api/generate"),
                    (b":scheme", b"http"),
                    (b":authority", b"127.0.0.1"),
                    (b"content-type", b"application/json"),
                ],
            )
            self.conn.send_data(sid, payload, end_stream=True)
            self.open += 1

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        events = conn.receive_data(data)
        c = self.c
        for ev in events:
            t = type(ev)
            if t is h2.events.DataReceived:
                c.lines += ev.data.count(b"\n")  # type: ignore[attr-defined]
                self.unacked += ev.flow_controlled_length  # type: ignore[attr-defined]
            elif t is h2.events.StreamEnded:
                c.streams_done += 1
                self.open -= 1
                self.todo -= 1
                if self.todo <= 0 and self.open == 0:
                    self.done.set()
            elif t is h2.events.RemoteSettingsChanged and self.next_i == 0:
                self.start_streams(self.todo)
            elif t is h2.events.StreamReset:
                raise RuntimeError(f"stream reset: {ev}")
        if self.unacked > 1 << 20:
            conn.increment_flow_control_window(self.unacked)
            self.unacked = 0
        out = conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)


class H1Client(asyncio.Protocol):
    """A raw HTTP/1.1 keep-alive connection: one streaming request at a time."""

    def __init__(self, counter: Counter, requests: int, num_predict: int, done: asyncio.Event):
        self.c = counter
        self.todo = requests
        self.num_predict = num_predict
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.i = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        payload = body(self.num_predict, self.i)
        self.i += 1
        assert self.transport is not None
        self.transport.write(
            b"POST /api/generate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
        )

    def data_received(self, data: bytes) -> None:
        # Chunk framing uses \r\n, NDJSON lines end in }\n: count those.
        self.c.lines += data.count(b"}\n")
        buf = self.tail + data[-8:]
        self.tail = buf[-8:]
        if buf.endswith(b"\r\n0\r\n\r\n"):
            self.tail = b""
            self.c.streams_done += 1
            self.todo -= 1
            if self.todo <= 0:
                self.done.set()
            else:
                self.send()


# --- scenarios ------------------------------------------------------------------


@dataclass
class Result:
    name: str
    chunks: int
    wall: float
    server_cpu: float

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.wall

    @property
    def us_per_chunk(self) -> float:
        return self.server_cpu / self.chunks * 1e6

    def row(self) -> str:
        return (
            f"| {self.name} | {self.chunks} | {self.wall:.2f} | {self.chunks_per_s:,.0f} | "
            f"{self.server_cpu / self.wall * 100:.0f}% | {self.us_per_chunk:.1f} | "
            f"{1e6 / self.us_per_chunk:,.0f} |"
        )


async def run_h2(port: int, conns: int, streams_per_conn: int, num_predict: int) -> Counter:
    loop = asyncio.get_running_loop()
    counter = Counter()
    events = []
    for _ in range(conns):
        ev = asyncio.Event()
        events.append(ev)
        await loop.create_connection(
            lambda ev=ev: H2Client(counter, streams_per_conn, num_predict, ev),  # type: ignore[misc]
            "127.0.0.1",
            port,
        )
    # Each H2Client opens all its streams at once, as soon as the server's SETTINGS arrive.
    await asyncio.gather(*(e.wait() for e in events))
    return counter


async def run_h1(port: int, conns: int, requests_per_conn: int, num_predict: int) -> Counter:
    loop = asyncio.get_running_loop()
    counter = Counter()
    events = []
    transports = []
    for _ in range(conns):
        ev = asyncio.Event()
        events.append(ev)
        tr, _ = await loop.create_connection(
            lambda ev=ev: H1Client(counter, requests_per_conn, num_predict, ev),  # type: ignore[misc]
            "127.0.0.1",
            port,
        )
        transports.append(tr)
    await asyncio.gather(*(e.wait() for e in events))
    for tr in transports:
        tr.close()
    return counter


def start_server(*extra: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "resilient_stream.cli", "serve", "--port", "0"]
    cmd += ["--stop-probability", "0", "--max-concurrent-streams", "1000", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r":(\d+) ", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(m.group(1))


def measure(name: str, proc: subprocess.Popen[str], coro_factory: object) -> Result:
    ps = psutil.Process(proc.pid)
    cpu0 = sum(ps.cpu_times()[:2])
    t0 = time.perf_counter()
    counter: Counter = asyncio.run(coro_factory())  # type: ignore[operator]
    wall = time.perf_counter() - t0
    cpu = sum(ps.cpu_times()[:2]) - cpu0
    return Result(name, counter.lines, wall, cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    scale = 1 if args.quick else 3
    results: list[Result] = []

    proc, port = start_server()
    try:
        # warm-up
        measure("warmup", proc, lambda: run_h2(port, 1, 10, 200))
        n = 2000
        results.append(
            measure(
                f"h2 unpaced, 1 conn x 50 streams x {n * scale} tokens",
                proc,
                lambda: run_h2(port, 1, 50, n * scale),
            )
        )
        results.append(
            measure(
                f"h2 unpaced, 4 conns x 100 streams x {n * scale // 2} tokens",
                proc,
                lambda: run_h2(port, 4, 100, n * scale // 2),
            )
        )
        results.append(
            measure(
                f"h1 unpaced, 50 conns x 1 stream x {n * scale} tokens",
                proc,
                lambda: run_h1(port, 50, 1, n * scale),
            )
        )
        results.append(
            measure(
                f"h1 unpaced, 8 conns x {20 * scale} requests x 200 tokens (keep-alive)",
                proc,
                lambda: run_h1(port, 8, 20 * scale, 200),
            )
        )
    finally:
        proc.terminate()
        proc.wait(10)

    tps = 20
    secs = 2 * scale
    proc, port = start_server("--tokens-per-second", str(tps))
    try:
        measure("warmup", proc, lambda: run_h2(port, 1, 10, 5))
        for streams in (1000,):
            results.append(
                measure(
                    f"h2 paced {tps} tok/s, 4 conns x {streams // 4} streams, {secs} s",
                    proc,
                    lambda s=streams: run_h2(port, 4, s // 4, tps * secs),
                )
            )
            results.append(
                measure(
                    f"h1 paced {tps} tok/s, {streams // 2} conns, {secs} s",
                    proc,
                    lambda s=streams: run_h1(port, s // 2, 1, tps * secs),
                )
            )
    finally:
        proc.terminate()
        proc.wait(10)

    print(f"\nreference server, {os.cpu_count()} cores (client and server share them)\n")
    print(
        "| scenario | chunks | wall s | chunks/s | server CPU | server us/chunk "
        "| one-core ceiling chunks/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(r.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
