"""``resilient-stream chaos``: run chaos scenarios from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..chaos_suite.report import Progress, Report
from ..chaos_suite.runner import run_scenario
from ..chaos_suite.scenario import Scenario, load_scenario, scenario_files
from ..logging import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chaos",
        help="run the chaos suite scenarios",
        description="Run chaos scenarios (TOML files) and check every stream against an "
        "unbroken baseline. Exit code 0 when every scenario passed, 1 otherwise.",
    )
    p.add_argument(
        "--dir",
        default=None,
        help="scenario directory (default: the scenarios shipped with the package)",
    )
    p.add_argument("--scenario", action="append", help="scenario name(s); default: all but soak")
    p.add_argument("--seed", type=int, help="override every scenario's seed")
    p.add_argument("--streams", type=int, help="override every scenario's stream count")
    p.add_argument("--json", action="store_true", help="print one JSON object per scenario")
    p.set_defaults(func=main)


def show_progress(name: str) -> object:
    def update(p: Progress) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(
                f"\r  {name}: {p.finished}/{p.streams} streams, {p.chunks} chunks, "
                f"{p.faults} faults "
            )
            sys.stderr.flush()

    return update


def main(args: argparse.Namespace) -> int:
    configure_logging("error")
    files = scenario_files(args.dir)
    scenarios: list[Scenario] = [load_scenario(f) for f in files]
    if args.scenario:
        known = {s.name for s in scenarios}
        missing = set(args.scenario) - known
        if missing:
            print(
                f"unknown scenario(s): {', '.join(sorted(missing))}; known: "
                f"{', '.join(sorted(known))}",
                file=sys.stderr,
            )
            return 2
        scenarios = [s for s in scenarios if s.name in args.scenario]
    else:
        scenarios = [s for s in scenarios if not s.soak]
    reports: list[Report] = []
    for sc in scenarios:
        update = show_progress(sc.name)
        report = asyncio.run(
            run_scenario(sc, streams=args.streams, seed=args.seed, on_progress=update)  # type: ignore[arg-type]
        )
        if sys.stderr.isatty():
            sys.stderr.write("\r" + " " * 70 + "\r")
        reports.append(report)
        if args.json:
            print(report.to_json().decode())
        else:
            print(report.table() + "\n")
    failed = [r.scenario for r in reports if not r.ok]
    if failed and not args.json:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
