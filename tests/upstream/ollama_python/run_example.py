"""Run one of ollama-python's examples (vendored byte for byte) with the import swapped.

    python run_example.py examples/chat-stream.py

The real ``ollama`` package is imported first, then ``sys.modules["ollama"]`` becomes
``resilient_stream.ollama``, so the example's ``import ollama`` / ``from ollama import
chat, AsyncClient`` take the drop-in's names (its module functions run on a default
drop-in ``Client``; every other name is still ollama's). Nothing else changes.
``RESILIENT_UPSTREAM_CLIENT=official`` skips the swap (the same example on ollama).
"""

from __future__ import annotations

import os
import runpy
import sys

import ollama

import resilient_stream.ollama as dropin

if __name__ == "__main__":
    if os.environ.get("RESILIENT_UPSTREAM_CLIENT", "dropin") != "official":
        sys.modules["ollama"] = dropin
    assert ollama.AsyncClient is not dropin.AsyncClient  # the real one stays loaded
    path = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(path, run_name="__main__")
