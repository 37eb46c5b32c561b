"""Runs ollama-python's own ``tests/test_client.py`` (vendored byte for byte) against
the drop-in: the import is swapped at collection time, nothing else.

While pytest imports the vendored module, ``ollama._client.AsyncClient`` and
``ollama._client.Client`` are the drop-in's classes, so the module's line
``from ollama._client import CONNECTION_ERROR_MESSAGE, AsyncClient, Client, _copy_tools``
binds ``AsyncClient`` and ``Client`` to ``resilient_stream.ollama``'s (the other two
names stay ollama's); the originals are put back right after the import. The
collection fails if the module's two names are not the drop-in's, so a silent
fallback to the official classes cannot pass.

``RESILIENT_UPSTREAM_CLIENT=official`` skips the swap: the same file against the
official client (the baseline: all pass). See README.md here and docs/ollama.md.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Generator
from typing import Any

import pytest

import resilient_stream.ollama as dropin

#: ollama/__init__.py binds the name ``_client`` to its default Client instance, so the
#: module is taken from the import system, not as ``ollama._client``.
UPSTREAM = importlib.import_module("ollama._client")
VENDORED = "test_client.py"
SWAP = os.environ.get("RESILIENT_UPSTREAM_CLIENT", "dropin") != "official"

#: The upstream tests the drop-in does not pass, and why (docs/ollama.md has the same
#: list). xfail(strict=True): one that starts passing fails the run, so the list is
#: always exactly the failing tests.
NO_DONE = (
    "the mock's stream never sends `done: true`; resilient-stream treats such an end as "
    "an interruption (DESIGN: resume contract) and resumes, the mock answers the resume "
    "request (another body) with 500 until the attempts run out, and the give-up is "
    "raised from the stream after the three parts"
)
XFAIL: dict[str, str] = {
    "test_client_chat_stream": NO_DONE,
    "test_client_generate_stream": NO_DONE,
    "test_async_client_chat_stream": NO_DONE,
    "test_async_client_generate_stream": NO_DONE,
}


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drop-in reads its StreamConfig from the environment, like any program: short
    backoffs, so the tests that end in retries (the NO_DONE ones) take milliseconds."""
    monkeypatch.setenv("RESILIENT_STREAM_BACKOFF_INITIAL", "0.01")
    monkeypatch.setenv("RESILIENT_STREAM_BACKOFF_MAX", "0.05")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """Import the vendored module with the drop-in's classes in ollama's place."""
    if not (SWAP and isinstance(collector, pytest.Module) and collector.path.name == VENDORED):
        return (yield)
    saved = UPSTREAM.AsyncClient, UPSTREAM.Client
    UPSTREAM.AsyncClient, UPSTREAM.Client = dropin.AsyncClient, dropin.Client
    try:
        report = yield
    finally:
        UPSTREAM.AsyncClient, UPSTREAM.Client = saved
    if report.passed:
        module = collector.obj
        if (module.AsyncClient, module.Client) != (dropin.AsyncClient, dropin.Client):
            raise pytest.UsageError(f"{collector.path}: the import swap did not take")
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the named exceptions; a name that matches no upstream test is an error."""
    if not SWAP:
        return
    vendored = [
        i for i in items if i.path.name == VENDORED and i.path.parent.name == "ollama_python"
    ]
    if not vendored:
        return  # this run did not collect the upstream file
    module = vendored[0].module if isinstance(vendored[0], pytest.Function) else None
    names = {n for n in vars(module) if n.startswith("test_")} if module else set()
    stale = sorted(set(XFAIL) - names)
    if stale:
        raise pytest.UsageError(
            f"tests/upstream/ollama_python/conftest.py XFAIL names no upstream test: {stale}"
        )
    for item in vendored:
        name = item.originalname if isinstance(item, pytest.Function) else item.name
        reason = XFAIL.get(name)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
