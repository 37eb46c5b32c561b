"""The chaos suite: every scenario shipped in resilient_stream/chaos_suite/scenarios/,
every stream checked against an unbroken baseline (byte-identical, full token count),
and nothing leaked afterwards.

Fast tier (default): each scenario at its own size, a few hundred streams in all.
Soak tier: ``pytest -m soak tests/test_chaos_scenarios.py`` or
``resilient-stream chaos --scenario soak``.
"""

from __future__ import annotations

import pytest

from resilient_stream.chaos_suite.asks import Baseline, over_asks, tokens_of
from resilient_stream.chaos_suite.runner import prompt_for, run_scenario
from resilient_stream.chaos_suite.scenario import load_scenario, scenario_files

SCENARIOS = {f.name.removesuffix(".toml"): load_scenario(f) for f in scenario_files()}


def _param(name: str) -> object:
    marks = [pytest.mark.soak] if SCENARIOS[name].soak else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [_param(n) for n in sorted(SCENARIOS)])
async def test_scenario_loses_nothing(name: str) -> None:
    scenario = SCENARIOS[name]
    report = await run_scenario(scenario)
    print("\n" + report.table())
    assert report.errors == {}, report.mismatches
    assert report.completed == report.streams
    assert report.identical == report.streams, report.mismatches
    assert report.over_asked == 0, report.over_ask_examples
    assert sum(report.faults.values()) > 0, "the scenario injected no fault: it proves nothing"
    assert report.open_streams == 0
    assert report.server_streams_active == 0
    assert report.leaked_tasks == 0
    assert report.leaked_fds == 0


def test_every_scenario_kind_required_by_the_suite_exists() -> None:
    kinds = {t.type for s in SCENARIOS.values() for t in s.toxics}
    assert {"drop_after_data_frames", "stall_stream", "reset_stream", "goaway"} <= kinds
    assert {"bandwidth", "latency", "cut_data"} <= kinds
    statuses = {s.server_faults.status for s in SCENARIOS.values() if s.server_faults}
    assert {429, 503} <= statuses
    assert any(s.replica_death for s in SCENARIOS.values())


def test_the_budget_check_counts_carried_tokens_strictly() -> None:
    """A request over budget is found by its stream's prompt; a carried text that ends
    inside a token counts that token (it was generated)."""
    base = Baseline(prompt=prompt_for(3), thinking=["hm", "m"], text=[" a", " bc", " d"])
    assert tokens_of(" a b", base.text) == 2 and tokens_of("", base.text) == 0
    assert tokens_of(" x", base.text) is None
    raw = {"prompt": prompt_for(3) + " a bc", "options": {"num_predict": 8}}
    chat = {
        "messages": [
            {"role": "user", "content": prompt_for(3)},
            {"role": "assistant", "content": " a", "thinking": "hmm"},
        ],
        "options": {"num_predict": 7},
    }
    sse = {"prompt": prompt_for(3) + " a b", "max_tokens": 8}
    requests = [("/api/generate", raw), ("/api/chat", chat), ("/v1/completions", sse)]
    baselines = [base] * 4
    assert over_asks(requests, baselines, budget=10) == []
    found = over_asks(requests, baselines, budget=9)
    assert [(o.path, o.carried_tokens, o.asked, o.left) for o in found] == [
        ("/api/generate", 2, 8, 7),
        ("/api/chat", 3, 7, 6),
        ("/v1/completions", 2, 8, 7),
    ]
