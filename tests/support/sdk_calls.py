"""What the SDK transport tests (async and sync) ask of the reference server."""

from __future__ import annotations

from typing import Any

N = 40  # tokens per answer
#: Deadlines and backoff short enough for tests over loopback.
FAST: dict[str, Any] = dict(
    idle_timeout=0.5,
    first_token_timeout=3.0,
    total_timeout=20.0,
    backoff_initial=0.01,
    backoff_max=0.05,
)
MESSAGES = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
PROMPT = "Tell me a story"
