"""Which URLs a recognised call comes from, and the base URL its engine gets.

The path is matched on the URL as sent (one ``str(url)``); a URL whose path is
percent-encoded or that carries a fragment is matched on its decoded path instead,
as before that shortcut, and a query passes through.
"""

from __future__ import annotations

import httpx
import msgspec
import pytest

from resilient_stream.sdk.recognise import recognise

GENERATE = msgspec.json.encode({"model": "m", "prompt": "hi"})
CHAT = msgspec.json.encode(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)


def base_of(url: str, body: bytes = GENERATE) -> str | None:
    call = recognise(httpx.Request("POST", url, content=body), body, "generic")
    return None if call is None else call.base


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:11434/api/generate", "http://127.0.0.1:11434"),
        ("http://127.0.0.1:11434/ollama/api/generate", "http://127.0.0.1:11434/ollama"),
        ("http://127.0.0.1:11434//api/generate", "http://127.0.0.1:11434"),
        ("https://example.test/api/generate", "https://example.test"),
        ("http://127.0.0.1:8/pre%20fix/api/generate", "http://127.0.0.1:8/pre%20fix"),
        ("http://127.0.0.1:8/api/gener%61te", "http://127.0.0.1:8"),  # decoded path matches
        ("http://127.0.0.1:8/api/generate#part", "http://127.0.0.1:8"),
    ],
)
def test_the_base_url_is_what_comes_before_the_known_path(url: str, base: str) -> None:
    assert base_of(url) == base


def test_an_openai_path_gives_the_base_before_v1() -> None:
    assert base_of("http://127.0.0.1:8/v1/chat/completions", CHAT) == "http://127.0.0.1:8"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8/api/generate?x=1",  # a query: not a call the engine re-sends
        "http://127.0.0.1:8/api/generated",
        "http://127.0.0.1:8/api/generate/",
        "http://127.0.0.1:8/api/tags",
    ],
)
def test_other_urls_pass_through(url: str) -> None:
    assert base_of(url) is None
