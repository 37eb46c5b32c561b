"""ollama-python's host strings, sans-I/O, without the ``ollama`` package.

The drop-in itself uses ollama's own client (which parses its host); this copy
serves the ``resilient-stream generate --host`` CLI, which must work without it.
"""

from __future__ import annotations

import os
import urllib.parse

DEFAULT_HOST = "http://127.0.0.1:11434"


def parse_host(host: str | None) -> str:
    """ollama-python's ``_parse_host``: ``None``/"" -> $OLLAMA_HOST or 127.0.0.1:11434;
    no scheme means http and port 11434; a scheme without a port means 80/443."""
    host = host or os.environ.get("OLLAMA_HOST") or ""
    host = host.strip()
    if not host:
        return DEFAULT_HOST
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "http", host
        default_port = 11434
    else:
        scheme = scheme.lower()
        default_port = 443 if scheme == "https" else 80
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    hostname = split.hostname or "127.0.0.1"
    try:
        port = split.port or default_port
    except ValueError:
        port = default_port
    if ":" in hostname:
        hostname = f"[{hostname}]"
    path = split.path.rstrip("/")
    return f"{scheme}://{hostname}:{port}{path}"
