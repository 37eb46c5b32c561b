"""`resilient-stream bench`: runs the named scripts, reports failures by exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient_stream.cli import main


def test_runs_the_named_benchmarks_and_passes_quick_where_supported(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bench_server.py").write_text("import sys; print('server', sys.argv[1:])\n")
    (tmp_path / "bench_stream.py").write_text("print('stream ran')\n")
    assert main(["bench", "server", "stream", "--quick", "--dir", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert "server ['--quick']" in out and "stream ran" in out


def test_a_failing_or_missing_benchmark_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "bench_stream.py").write_text("raise SystemExit(3)\n")
    assert main(["bench", "stream", "--dir", str(tmp_path)]) == 1
    assert main(["bench", "proxy", "--dir", str(tmp_path)]) == 1


def test_unknown_benchmark_is_a_usage_error() -> None:
    assert main(["bench", "nope"]) == 2


def test_e2e_gets_quick_and_its_size_and_length_flags(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bench_e2e.py").write_text("import sys; print('e2e', sys.argv[1:])\n")
    (tmp_path / "bench_stream.py").write_text("import sys; print('stream', sys.argv[1:])\n")
    argv = ["bench", "e2e", "stream", "--quick", "--sizes", "300,1000", "--lengths", "short"]
    assert main([*argv, "--dir", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    assert "e2e ['--quick', '--sizes', '300,1000', '--lengths', 'short']" in out
    assert "stream []" in out  # the flags go only to scripts that take them


def test_e2e_plans_its_cells_and_states_why_it_skips_one() -> None:
    import importlib
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench"
    sys.path.insert(0, str(bench))
    try:
        e2e = importlib.import_module("bench_e2e")
    finally:
        sys.path.remove(str(bench))
    args = e2e.parse_args(["--sizes", "300,10000", "--lengths", "short,long"])
    cells = e2e.cells(args)
    assert [(c.streams, c.length, c.tps) for c in cells] == [
        (300, "short", 50.0),
        (10000, "short", 2.0),
        (300, "long", 50.0),
        (10000, "long", 2.0),
    ]
    assert e2e.skip_reason("bare", cells[0], [], 45.0) == ""
    assert "ideal 200 s > budget 45 s" in e2e.skip_reason("bare", cells[3], [], 45.0)
    # ollama-python's pool of 100 connections runs 10,000 streams in 100 waves
    assert "100 waves" in e2e.skip_reason("ollama", cells[1], [], 45.0)
