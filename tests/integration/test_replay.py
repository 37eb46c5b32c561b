"""The demo's fault plan replays: the same seed injects the same faults, whatever the timing.

Runs the demo's embedded scenario (reference servers, chaos proxies, StreamClient)
with the demo's 200 streams: fewer (say 60) replay even with the old
stream-id keying, because stream ids and connections then barely depend on timing.
The plan is compared on the requests both runs made (``Report.requests``): a run
on a starved machine can time out a slow stream and make a request the other did
not (a fresh-clone CI run once did), which must not read as a different plan.
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
        # Every fault names the request it hit (the demo's toxics act on streams).
        assert all(f.request for f in report.fault_plan), report.fault_plan
    # Every request both runs made got the same fate. On a starved machine a slow
    # stream can time out in one run only: its extra request gets a draw of its own,
    # and the resume after it asks for other bodies; all the rest must replay. The
    # streams' first requests are the same in any run, so they are all in both.
    both = set(first.requests) & set(second.requests)
    assert len(both) >= 2 * STREAMS  # each first request, at the proxy and at a replica
    assert first.plan_on(both), "no fault on a request both runs made"
    assert second.plan_on(both) == first.plan_on(both)
    if first.requests == second.requests:  # the usual case: the very same requests
        assert second.fault_plan_digest == first.fault_plan_digest
        assert second.faults == first.faults
    # The seed decides the plan: another seed injects other faults.
    other = await run_scenario(DEMO, streams=STREAMS, seed=8)
    assert other.identical == STREAMS, other.mismatches
    assert other.fault_plan_digest != first.fault_plan_digest
    common = both & set(other.requests)
    assert other.plan_on(common) != first.plan_on(common)
