"""Did any request ask for more tokens than were left? (sans-I/O)

The resume contract says a resumed request asks only for what is left of the
caller's budget after the text it carries. The chaos suite checks it on every
request the servers received, with the baseline's tokens: the baseline server
sends one token per chunk, so the tokens of any carried text are the baseline
chunks that make it up (the reference model is deterministic). A carried text
that ends inside a token counts that token (it was generated), so the check is
strict.

A request's stream is found by the prompt it carries (``chaos stream {i}:``, see
``runner.request_for``); what it carries is the text after the caller's prompt
(``/api/generate`` raw, ``/v1/completions``) or the trailing assistant message of
a chat (``/api/chat`` also serves the resumes of a non-raw generate).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

#: The prompt marker of stream ``i`` (``runner.request_for``).
_STREAM = re.compile(r"chaos stream (\d+): ")
_REASONING = ("thinking", "reasoning_content", "reasoning")


class Baseline(msgspec.Struct, frozen=True):
    """One stream's unbroken answer as the server's tokens (one chunk each)."""

    prompt: str
    thinking: list[str]
    text: list[str]


class OverAsk(msgspec.Struct, frozen=True):
    stream: int
    path: str
    carried_tokens: int
    asked: int
    left: int


def _budget(body: dict[str, Any]) -> int | None:
    options = body.get("options")
    if isinstance(options, dict) and isinstance(options.get("num_predict"), int):
        return int(options["num_predict"])
    keys = ("max_tokens", "max_completion_tokens")
    limits = [body[k] for k in keys if isinstance(body.get(k), int)]
    return min(limits) if limits else None


def _carried(body: dict[str, Any], prompt: str) -> tuple[str, str] | None:
    """(thinking, text) a request carries after the caller's own input; None: unknown."""
    if isinstance(body.get("prompt"), str):
        carried: str = body["prompt"]
        return ("", carried[len(prompt) :]) if carried.startswith(prompt) else None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "assistant":
        return ("", "")
    thinking = next((last[k] for k in _REASONING if isinstance(last.get(k), str)), "")
    content = last.get("content")
    return (thinking, content if isinstance(content, str) else "")


def tokens_of(carried: str, tokens: list[str]) -> int | None:
    """How many of ``tokens`` it takes to make ``carried`` (a token it ends inside
    counts); None: ``carried`` is not a prefix of their text."""
    joined, k = "", 0
    while len(joined) < len(carried) and k < len(tokens):
        joined += tokens[k]
        k += 1
    return k if joined.startswith(carried) else None


def over_asks(
    requests: list[tuple[str, dict[str, Any]]], baselines: list[Baseline], budget: int
) -> list[OverAsk]:
    """The requests that asked for more than was left of ``budget`` after what they
    carried (each request by path and decoded JSON body)."""
    out: list[OverAsk] = []
    for path, body in requests:
        asked = _budget(body)
        found = _STREAM.search(msgspec.json.encode(body).decode())
        if asked is None or found is None or int(found.group(1)) >= len(baselines):
            continue
        i = int(found.group(1))
        base = baselines[i]
        carried = _carried(body, base.prompt)
        if carried is None:
            continue
        thinking, text = carried
        k_think = tokens_of(thinking, base.thinking)
        k_text = tokens_of(text, base.text)
        if k_think is None or k_text is None:
            continue  # not the baseline's text: the identity check reports it
        k = k_think + k_text
        if asked > budget - k:
            out.append(OverAsk(i, path, k, asked, budget - k))
    return out
