"""The ``resilient-stream`` command: one module per subcommand, listed here.

``demo``, ``generate`` and ``chat`` (:mod:`.generate`), ``serve`` (the reference
server), ``proxy`` (the chaos proxy), ``chaos`` (the chaos suite) and ``bench``.
Each module has ``register(subparsers)``, which adds its parser and stores its
handler as ``func`` (it returns the process exit code).
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Sequence

from .. import __version__, benchmarks
from . import chaos, demo, generate, proxy, serve

#: Each subcommand's ``register``, in the order ``--help`` lists them.
SUBCOMMANDS = (
    demo.register,  # demo: reference server + chaos proxy + many streams
    generate.register,  # generate / chat: stream to the terminal, with resume
    serve.register,  # serve: the reference server
    proxy.register,  # proxy: the chaos proxy
    chaos.register,  # chaos: run the chaos suite's scenarios
    benchmarks.register,  # bench: run the benchmarks, write tables and plots
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-stream",
        description="LLM token streams that survive the network.",
    )
    parser.add_argument("--version", action="version", version=f"resilient-stream {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (the package's own, when run from a tree
    that is not installed)."""
    try:
        return importlib.metadata.version("resilient-stream")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except KeyboardInterrupt:
        return 130
    return code
