"""The pytest plugin, as a user meets it: a fresh project with nothing but the installed
package writes chaos tests with the `reference_server`, `chaos_proxy` and
`make_chaos_proxy` fixtures, in pytest-asyncio's strict mode (no conftest, no ini)."""

from __future__ import annotations

import pytest

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.chaos import ChaosProxy
from resilient_stream.pytest_plugin import DEFAULT_SEED, DEFAULT_TOXICS
from resilient_stream.refserver import ReferenceServer

pytest_plugins = ["pytester"]

USER_TESTS = """
import asyncio

import pytest
from resilient_stream import StreamClient, StreamConfig

MSGS = [{"role": "user", "content": "Why is the sky blue?"}]
OPTS = {"num_predict": 120}
FAST = StreamConfig(idle_timeout=1.0, backoff_initial=0.01, backoff_max=0.05)


async def answer(url, **config):
    async with StreamClient(url, config=FAST.replace(**config)) as client:
        return await client.chat(model="m", messages=MSGS, options=OPTS).collect()


async def answers(url, n, **config):
    async with StreamClient(url, config=FAST.replace(**config)) as client:
        streams = [client.chat(model="m", messages=MSGS, options=OPTS) for _ in range(n)]
        return await asyncio.gather(*(s.collect() for s in streams))


@pytest.mark.asyncio
@pytest.mark.reference_server(stop_probability=0.0)
@pytest.mark.parametrize("http2", [True, False])
async def test_answers_survive_the_default_chaos(reference_server, chaos_proxy, http2):
    clean = await answer(reference_server.url, http2=http2)
    chaotic = await answers(chaos_proxy.url, 6, http2=http2)
    assert sum(r.resumes for r in chaotic) >= 1, chaos_proxy.faults
    assert [r.text for r in chaotic] == [clean.text] * 6
    assert all(r.eval_count == 120 for r in chaotic)


@pytest.mark.asyncio
@pytest.mark.reference_server(stop_probability=0.0)
async def test_custom_toxics_replay_with_the_same_seed(make_chaos_proxy):
    toxics = ["reset_stream:probability=1.0,min_bytes=500,max_bytes=3000,max_streams=1"]
    first = await make_chaos_proxy(toxics=toxics, seed=3)
    again = await make_chaos_proxy(toxics=toxics, seed=3)
    a = await answer(first.url)
    b = await answer(again.url)
    assert a.text == b.text and a.resumes == b.resumes == 1
    assert first.fault_plan() == again.fault_plan() and first.fault_plan()


@pytest.mark.asyncio
async def test_proxy_in_front_of_my_own_upstream(reference_server, make_chaos_proxy):
    proxy = await make_chaos_proxy(toxics=["latency:latency=20"], upstream=reference_server.url)
    result = await answer(proxy.url)
    assert result.done and proxy.connections_accepted >= 1
"""


BROKEN_TEST = """
import pytest

@pytest.mark.asyncio
async def test_broken(chaos_proxy, reference_server):
    assert chaos_proxy.url == reference_server.url
"""


@pytest.mark.timeout(60)
def test_fresh_project_writes_passing_chaos_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_service=USER_TESTS, test_broken=BROKEN_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    # The user's chaos tests pass; a wrong assertion still fails (the fixtures hide nothing).
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*test_broken.py::test_broken*"])
    result.stdout.no_fnmatch_line("*PytestUnknownMarkWarning*")


# The plugin is installed here too: the fixtures work in this repository's own tests.


@pytest.mark.reference_server(tokens_per_second=0.0, stop_probability=0.0, http1=False)
async def test_marker_settings_reach_the_reference_server(
    reference_server: ReferenceServer,
) -> None:
    assert reference_server.settings.http1 is False
    assert reference_server.settings.stop_probability == 0.0


@pytest.mark.reference_server(stop_probability=0.0, max_concurrent_streams=3)
@pytest.mark.parametrize("reference_server", [{"max_concurrent_streams": 7}], indirect=True)
async def test_indirect_parameters_override_the_marker(reference_server: ReferenceServer) -> None:
    assert reference_server.settings.max_concurrent_streams == 7
    assert reference_server.settings.stop_probability == 0.0


async def test_chaos_proxy_fixture_uses_the_default_mix(
    chaos_proxy: ChaosProxy, reference_server: ReferenceServer
) -> None:
    assert chaos_proxy.seed == DEFAULT_SEED
    assert len(chaos_proxy.toxics) == len(DEFAULT_TOXICS)
    assert chaos_proxy.upstream == f"127.0.0.1:{reference_server.port}"
    async with StreamClient(chaos_proxy.url, config=StreamConfig(idle_timeout=1.0)) as client:
        result = await client.generate(model="m", prompt="hi", options={"num_predict": 5}).collect()
    assert result.done
