"""The demo's fault plan replays: the same seed injects the same faults, whatever the timing.

Runs the demo's embedded scenario (reference servers, chaos proxies, StreamClient)
with the demo's 200 streams: fewer (say 60) replay even with the old
stream-id keying, because stream ids and connections then barely depend on timing.
"""

from __future__ import annotations

import pytest

from resilient_stream.chaos_suite.runner import run_scenario
from resilient_stream.cli.demo import DEMO

STREAMS = 200


@pytest.mark.timeout(120)
async def test_the_demo_scenario_replays_the_same_fault_plan_with_the_same_seed() -> None:
    first = await run_scenario(DEMO, streams=STREAMS, seed=7)
    second = await run_scenario(DEMO, streams=STREAMS, seed=7)
    for report in (first, second):
        assert report.completed == report.identical == STREAMS, report.mismatches
        assert report.ok, report
        assert len(report.faults) >= 4, report.faults
    assert second.fault_plan_digest == first.fault_plan_digest
    assert second.faults == first.faults
    # The seed decides the plan: another seed injects other faults.
    other = await run_scenario(DEMO, streams=STREAMS, seed=8)
    assert other.identical == STREAMS, other.mismatches
    assert other.fault_plan_digest != first.fault_plan_digest
