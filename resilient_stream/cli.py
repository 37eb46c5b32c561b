"""The ``resilient-stream`` command.

Each subcommand lives next to the code it drives and registers itself here
through a ``register(subparsers)`` function, so this file stays a table of
contents: ``serve`` (reference server), ``proxy`` (chaos proxy), ...
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

#: Modules that expose ``register(subparsers) -> None``. A subcommand's handler
#: is stored as ``func`` on its parser and returns the process exit code.
SUBCOMMAND_MODULES = (
    "resilient_stream.demo.cli",  # demo: reference server + chaos proxy + many streams
    "resilient_stream.interactive",  # generate / chat: stream to the terminal, with resume
    "resilient_stream.refserver.cli",  # serve: the reference server
    "resilient_stream.chaos.cli",  # proxy: the chaos proxy
    "resilient_stream.chaos_suite",  # chaos: run the chaos suite scenarios
    "resilient_stream.benchmarks",  # bench: run the benchmarks, write tables and plots
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-stream",
        description="LLM token streams that survive the network.",
    )
    parser.add_argument("--version", action="version", version=f"resilient-stream {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Skip a reserved subcommand whose module (or parent package) is not written
            # yet; a missing import *inside* an existing module still raises.
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise
            continue
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
        register = module.register
        register(sub)
    return parser


def _version() -> str:
    """The installed distribution's version (the package's own, when run from a tree
    that is not installed)."""
    try:
        return importlib.metadata.version("resilient-stream")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

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


if __name__ == "__main__":
    sys.exit(main())
