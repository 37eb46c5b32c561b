"""pytest fixtures for the reference server (needs pytest-asyncio).

Enable in a conftest.py with ``pytest_plugins = ["resilient_stream.testing.pytest_plugin"]``.

- ``reference_server``: a started :class:`ReferenceServer` on 127.0.0.1, port 0,
  stopped after the test. Parametrize it indirectly to pass settings::

      @pytest.mark.parametrize("reference_server", [{"tokens_per_second": 50}], indirect=True)
      async def test_x(reference_server): ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from resilient_stream.testing.server import ReferenceServer


@pytest_asyncio.fixture
async def reference_server(request: pytest.FixtureRequest) -> AsyncIterator[ReferenceServer]:
    kwargs = dict(getattr(request, "param", None) or {})
    kwargs.setdefault("port", 0)
    async with ReferenceServer(**kwargs) as srv:
        yield srv
