"""``resilient-stream proxy``: run a chaos proxy (and optionally its REST API) until stopped.

    resilient-stream proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:11434 \\
        --toxic latency:downstream:latency=100,jitter=10 --toxic reset_stream:probability=0.1 \\
        --seed 7 --api 127.0.0.1:8474

    resilient-stream proxy --api 127.0.0.1:8474     # like toxiproxy-server: no proxy yet

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

from ..chaos.api import ApiServer, ProxyRegistry
from ..chaos.proxy import ChaosProxy, split_hostport
from ..chaos.spec import to_spec
from ..chaos.toxic import REGISTRY, ChaosError, ToxicSpec, toxic_class


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
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:0)")
    p.add_argument(
        "--upstream",
        help="HOST:PORT of the real server (without it, --api serves an empty registry, "
        "like toxiproxy-server)",
    )
    p.add_argument(
        "--toxic",
        action="append",
        default=[],
        metavar="SPEC",
        help="e.g. latency:downstream:latency=100,jitter=10 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random decision")
    p.add_argument("--name", help="proxy name in the REST API (default chaos)")
    p.add_argument("--api", metavar="HOST:PORT", help="serve the toxiproxy-compatible REST API")
    p.add_argument(
        "--faults", action="store_true", help="print each fault record as a JSON line on exit"
    )
    p.set_defaults(func=run)


def _usage_error(args: argparse.Namespace) -> str | None:
    if args.upstream is not None:
        return None
    if args.api is None:
        return (
            "give --upstream HOST:PORT (a proxy), --api HOST:PORT (an empty registry "
            "that the REST API fills, like toxiproxy-server), or both"
        )
    given = [
        flag
        for flag, value in (
            ("--toxic", args.toxic),
            ("--listen", args.listen),
            ("--name", args.name),
        )
        if value
    ]
    if given:
        return (
            f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --upstream: "
            "they set up the proxy that --upstream starts (with --api alone, create "
            "proxies through the REST API)"
        )
    return None


def run(args: argparse.Namespace) -> int:
    problem = _usage_error(args)
    if problem is not None:
        print(f"resilient-stream proxy: {problem}", file=sys.stderr)
        return 2
    try:
        specs = [to_spec(t) for t in args.toxic]  # validates attributes too
        if args.upstream is not None:
            split_hostport(args.upstream)
        api = split_hostport(args.api) if args.api else None
    except (ValueError, ChaosError) as exc:
        print(f"resilient-stream proxy: {exc}", file=sys.stderr)
        return 2
    try:
        if args.upstream is None:
            assert api is not None
            return asyncio.run(_serve_registry(args, api))
        return asyncio.run(_serve(args, specs, api))
    except (ChaosError, ValueError, OSError) as exc:
        print(f"resilient-stream proxy: {exc}", file=sys.stderr)
        return 1


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_registry(args: argparse.Namespace, api: tuple[str, int]) -> int:
    """``--api`` without ``--upstream``: an empty registry, as ``toxiproxy-server``
    starts; with ``--faults``, each record of each proxy, with its proxy's name."""
    stop = _stop_event()
    registry = ProxyRegistry(seed=args.seed)
    server = ApiServer(registry, host=api[0], port=api[1])
    await server.start()
    print(f"api listening on {server.url}", flush=True)
    try:
        await stop.wait()
    finally:
        proxies = sorted(registry.proxies.items())
        await server.stop()
    total = 0
    for name, proxy in proxies:
        total += len(proxy.faults)
        if args.faults:
            for record in proxy.faults:
                line = msgspec.json.encode({"proxy": name, **msgspec.to_builtins(record)})
                print(line.decode(), flush=True)
    print(f"faults injected: {total}", file=sys.stderr, flush=True)
    return 0


async def _serve(
    args: argparse.Namespace, specs: list[ToxicSpec], api: tuple[str, int] | None
) -> int:
    proxy = ChaosProxy(
        upstream=args.upstream,
        toxics=specs,
        seed=args.seed,
        listen=args.listen or "127.0.0.1:0",
        name=args.name or "chaos",
    )
    stop = _stop_event()
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
