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
