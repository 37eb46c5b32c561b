"""``resilient-stream proxy``: run a chaos proxy (and optionally its REST API) until stopped.

    resilient-stream proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:11434 \\
        --toxic latency:downstream:latency=100,jitter=10 --toxic reset_stream:probability=0.1 \\
        --seed 7 --api 127.0.0.1:8474

Prints one line per address it listens on, then the faults as JSON lines
when it stops (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import msgspec

from .api import ApiServer, ProxyRegistry
from .proxy import ChaosProxy, split_hostport
from .spec import to_spec
from .toxic import REGISTRY, ChaosError, ToxicSpec, toxic_class


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    toxic_class("latency")  # fills the registry, for the help text
    p = subparsers.add_parser(
        "proxy",
        help="run the chaos proxy (toxiproxy-style toxics + HTTP/2 faults)",
        description="Run a seeded chaos proxy between clients and an upstream. "
        "Toxic spec: TYPE[:STREAM][:KEY=VALUE,...] (keys name= and toxicity= are special) "
        "or toxiproxy JSON. See docs/chaos.md.",
        epilog="toxic types: " + ", ".join(sorted(REGISTRY)),
    )
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    p.add_argument(
        "--toxic",
        action="append",
        default=[],
        metavar="SPEC",
        help="e.g. latency:downstream:latency=100,jitter=10 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random decision")
    p.add_argument("--name", default="chaos", help="proxy name in the REST API")
    p.add_argument("--api", metavar="HOST:PORT", help="serve the toxiproxy-compatible REST API")
    p.add_argument(
        "--faults", action="store_true", help="print each fault record as a JSON line on exit"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        specs = [to_spec(t) for t in args.toxic]  # validates attributes too
        split_hostport(args.upstream)
        api = split_hostport(args.api) if args.api else None
    except (ValueError, ChaosError) as exc:
        print(f"resilient-stream proxy: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args, specs, api))
    except (ChaosError, ValueError, OSError) as exc:
        print(f"resilient-stream proxy: {exc}", file=sys.stderr)
        return 1


async def _serve(
    args: argparse.Namespace, specs: list[ToxicSpec], api: tuple[str, int] | None
) -> int:
    proxy = ChaosProxy(
        upstream=args.upstream,
        toxics=specs,
        seed=args.seed,
        listen=args.listen,
        name=args.name,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with proxy:
        print(f"proxy {proxy.name} listening on {proxy.listen} -> {proxy.upstream}", flush=True)
        for t in proxy.toxics:
            print(f"toxic {msgspec.json.encode(t).decode()}", flush=True)
        server: ApiServer | None = None
        if api is not None:
            registry = ProxyRegistry(seed=args.seed)
            registry.add(proxy)
            server = ApiServer(registry, host=api[0], port=api[1])
            await server.start()
            print(f"api listening on {server.url}", flush=True)
        try:
            await stop.wait()
        finally:
            if server is not None:
                await server.stop(close_proxies=False)
        if args.faults:
            for record in proxy.faults:
                print(msgspec.json.encode(record).decode(), flush=True)
        print(f"faults injected: {len(proxy.faults)}", file=sys.stderr, flush=True)
    return 0
