"""The swap conftest.py applies is the one README.md describes, and no more."""

from __future__ import annotations

import importlib

import ollama

import resilient_stream.ollama as dropin
from resilient_stream.sdk import ResilientSyncTransport, ResilientTransport


def test_ollamas_classes_are_restored_after_the_vendored_import() -> None:
    upstream = importlib.import_module("ollama._client")
    assert upstream.AsyncClient is ollama.AsyncClient is not dropin.AsyncClient
    assert upstream.Client is ollama.Client is not dropin.Client


def test_the_swapped_classes_are_ollamas_with_the_resilient_transport() -> None:
    assert issubclass(dropin.AsyncClient, ollama.AsyncClient)
    assert issubclass(dropin.Client, ollama.Client)
    sync = dropin.Client("127.0.0.1:9")
    try:
        assert isinstance(sync._client._transport, ResilientSyncTransport)
    finally:
        sync.close()
    assert sync._client.is_closed


async def test_the_async_client_runs_on_the_resilient_transport() -> None:
    async with dropin.AsyncClient("127.0.0.1:9") as client:
        assert isinstance(client._client._transport, ResilientTransport)
        assert client._client._transport is client.resilient_transport
    assert client._client.is_closed
