"""Ejection is failover: with one replica there is nothing to eject to (issue 10, item 12).

A single-replica client used to log ``replica.ejected`` at WARNING after one blip,
which lands on the stderr of every service without logging configuration.
Real sockets: the reference server drops the first connections.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.refserver import Fault, ReferenceServer
from resilient_stream.refserver.faults import FaultSchedule

pytestmark = pytest.mark.timeout(30)

CFG = StreamConfig(replica_eject_after=1, idle_timeout=1.0, backoff_initial=0.01, backoff_max=0.02)
DROPS = {0: Fault("drop_connection", after_tokens=3), 1: Fault("drop_connection", after_tokens=3)}


async def test_a_lone_replica_is_never_ejected_nor_warned_about() -> None:
    async with ReferenceServer(stop_probability=0.0, faults=FaultSchedule(DROPS)) as srv:
        async with StreamClient(srv.url, config=CFG) as client:
            with capture_logs() as logs:
                result = await client.generate(
                    model="m", prompt="p", options={"num_predict": 20}
                ).collect()
            (replica,) = client.replicas.replicas
    assert result.resumes == 2 and result.done
    assert replica.failures == 2 and replica.ejected_until == 0.0
    assert "replica.ejected" not in [e["event"] for e in logs]


async def test_with_two_replicas_the_failing_one_is_still_ejected() -> None:
    async with ReferenceServer(stop_probability=0.0, faults=FaultSchedule(DROPS)) as bad:
        async with ReferenceServer(stop_probability=0.0) as good:
            async with StreamClient([bad.url, good.url], config=CFG) as client:
                with capture_logs() as logs:
                    result = await client.generate(
                        model="m", prompt="p", options={"num_predict": 20}
                    ).collect()
    assert result.done and result.resumes == 1
    ejected = [e for e in logs if e["event"] == "replica.ejected"]
    assert [e["endpoint"] for e in ejected] == [bad.url]
