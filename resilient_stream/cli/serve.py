"""``resilient-stream serve``: run the reference server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from resilient_stream.refserver.server import ReferenceServer


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the Ollama-compatible reference server (HTTP/1.1 + h2c on one port)",
        description="Run the reference server: a deterministic Ollama-compatible model "
        "server for tests and benchmarks. Speaks HTTP/1.1 and HTTP/2 (prior knowledge, "
        "or ALPN with --tls-cert/--tls-key) on one port.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434, help="0 picks a free port")
    p.add_argument("--tokens-per-second", type=float, default=0.0, help="per stream; 0 = unpaced")
    p.add_argument("--first-token-delay", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--jitter", type=float, default=0.0, help="+- fraction of each token gap")
    p.add_argument(
        "--batch-steps",
        action="store_true",
        help="pace all streams on one clock (a batched decoder's steps), not each its own",
    )
    p.add_argument(
        "--no-running-count",
        dest="report_tokens",
        action="store_false",
        help="token counts only on the last chunk, as Ollama and OpenAI send them "
        "(default: a running count on every chunk, vLLM's continuous usage stats)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the jitter RNG")
    p.add_argument("--max-concurrent-streams", type=int, default=100)
    p.add_argument(
        "--stop-probability", type=float, default=None, help="at each sentence end (default 0.2)"
    )
    p.add_argument("--max-tokens", type=int, default=4096, help="cap when num_predict is unset")
    p.add_argument("--tls-cert", default=None, metavar="PEM")
    p.add_argument("--tls-key", default=None, metavar="PEM")
    p.add_argument("--no-http2", dest="http2", action="store_false")
    p.add_argument("--no-http1", dest="http1", action="store_false")
    p.add_argument(
        "--line-separators",
        action="store_true",
        help="add U+0085/U+2028/U+2029 tokens (break clients that use str.splitlines)",
    )
    p.add_argument(
        "--final-chunk-text",
        action="store_true",
        help="send the last token in the final done:true chunk, not in a chunk of its own",
    )
    p.add_argument(
        "--models",
        action="append",
        default=None,
        metavar="NAME[,NAME...]",
        help="serve only these models (repeatable or comma-separated; NAME = NAME:latest); "
        "others get Ollama's 404. Default: any name except ones starting with 'missing'",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    server = ReferenceServer(
        args.host,
        args.port,
        tokens_per_second=args.tokens_per_second,
        first_token_delay=args.first_token_delay,
        jitter=args.jitter,
        batch_steps=args.batch_steps,
        seed=args.seed,
        max_concurrent_streams=args.max_concurrent_streams,
        stop_probability=args.stop_probability,
        max_tokens=args.max_tokens,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        http2=args.http2,
        http1=args.http1,
        line_separators=args.line_separators,
        models=_model_list(args.models),
        final_chunk_text=args.final_chunk_text,
        report_tokens=args.report_tokens,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server))
    return 0


def _model_list(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


async def _serve(server: ReferenceServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"reference server listening on {server.url} (HTTP/1.1 + HTTP/2)", flush=True)
        await stop.wait()
    print("reference server stopped", flush=True)
