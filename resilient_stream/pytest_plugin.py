"""pytest plugin: put your code under chaos in a few lines.

Installed with the package (``pytest11`` entry point), so the fixtures are
there in any project that has ``resilient-stream`` and ``pytest-asyncio``:

- ``reference_server``: a running :class:`~resilient_stream.refserver.ReferenceServer`
  (function scope). Settings come from the ``reference_server`` marker,
  ``@pytest.mark.reference_server(tokens_per_second=50, stop_probability=0.0)``, or
  from indirect parametrization, ``@pytest.mark.parametrize("reference_server",
  [{"tokens_per_second": 50}], indirect=True)`` (the parameter wins over the marker).
- ``chaos_proxy``: a :class:`~resilient_stream.chaos.ChaosProxy` in front of
  ``reference_server`` with :data:`DEFAULT_TOXICS` and :data:`DEFAULT_SEED`.
- ``make_chaos_proxy``: an async factory, ``await make_chaos_proxy(toxics=[...],
  seed=1, upstream="127.0.0.1:8000")``, for custom faults or your own upstream.
  Every proxy it made is stopped after the test.

Example::

    async def test_answer_survives_chaos(chaos_proxy):
        async with StreamClient(chaos_proxy.url) as client:
            result = await client.generate(model="m", prompt="hi").collect()
        assert result.done

The heavy imports happen inside the fixtures, so loading the plugin costs a
project that does not use it nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from resilient_stream.chaos import ChaosProxy
    from resilient_stream.refserver import ReferenceServer

#: The default fault mix of ``chaos_proxy``: what a resilient client must survive, over
#: HTTP/2 and HTTP/1.1 alike. A little latency with jitter; reads split into small
#: pieces (partial lines, split UTF-8); on HTTP/2, the first stream of every connection
#: and 20% of the others reset somewhere in their first 4 KB; half of all connections
#: cut after 5 KB. Decisions are seeded per connection and request (replayable).
DEFAULT_TOXICS: tuple[str, ...] = (
    "latency:latency=2,jitter=2",
    "slicer:average_size=64,size_variation=48",
    "reset_stream:name=reset_first,probability=1.0,min_bytes=200,max_bytes=4000,max_streams=1",
    "reset_stream:name=reset_some,probability=0.2,min_bytes=200,max_bytes=4000",
    "limit_data:bytes=5000,toxicity=0.5",
)
#: The default seed: the same seed and the same traffic give the same faults.
DEFAULT_SEED = 7

ToxicLike = str | Mapping[str, Any]
ProxyFactory = Callable[..., Awaitable["ChaosProxy"]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reference_server(**settings): keyword arguments for the reference_server fixture "
        "(tokens_per_second, stop_probability, faults, http2, ...)",
    )


def _upstream(value: str) -> str:
    """``http://host:port[/...]`` or ``host:port`` -> ``host:port``."""
    if "://" in value:
        value = value.split("://", 1)[1]
    return value.split("/", 1)[0]


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only without pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def reference_server(request: pytest.FixtureRequest) -> AsyncIterator[ReferenceServer]:
        """A running reference server on 127.0.0.1:0 (settings: marker, then param)."""
        from resilient_stream.refserver import ReferenceServer

        marker = request.node.get_closest_marker("reference_server")
        settings: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
        settings.update(getattr(request, "param", None) or {})
        async with ReferenceServer(**settings) as server:
            yield server

    @pytest_asyncio.fixture
    async def make_chaos_proxy(
        reference_server: ReferenceServer,
    ) -> AsyncIterator[ProxyFactory]:
        """``await make_chaos_proxy(toxics=..., seed=..., upstream=...)`` -> a started
        ChaosProxy (upstream defaults to ``reference_server``); all stopped at teardown."""
        from resilient_stream.chaos import ChaosProxy

        proxies: list[ChaosProxy] = []

        async def make(
            toxics: Iterable[ToxicLike] = DEFAULT_TOXICS,
            *,
            seed: int = DEFAULT_SEED,
            upstream: str | None = None,
        ) -> ChaosProxy:
            target = _upstream(upstream) if upstream else f"127.0.0.1:{reference_server.port}"
            proxy = ChaosProxy(upstream=target, toxics=list(toxics), seed=seed)
            await proxy.start()
            proxies.append(proxy)
            return proxy

        try:
            yield make
        finally:
            for proxy in reversed(proxies):
                await proxy.stop()

    @pytest_asyncio.fixture
    async def chaos_proxy(make_chaos_proxy: ProxyFactory) -> ChaosProxy:
        """A ChaosProxy in front of ``reference_server``: DEFAULT_TOXICS, DEFAULT_SEED."""
        return await make_chaos_proxy()

else:  # pragma: no cover - only without pytest-asyncio

    def _missing(*_: Any) -> Any:
        pytest.fail(
            "the resilient_stream fixtures are async: install pytest-asyncio "
            "(pip install pytest-asyncio)",
            pytrace=False,
        )

    reference_server = pytest.fixture(name="reference_server")(_missing)
    make_chaos_proxy = pytest.fixture(name="make_chaos_proxy")(_missing)
    chaos_proxy = pytest.fixture(name="chaos_proxy")(_missing)
