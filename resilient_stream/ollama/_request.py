"""ollama-python's request conventions, sans-I/O: host strings, images, messages, tools.

These turn what a caller passes to ``ollama.AsyncClient`` (paths, bytes,
pydantic models, Python functions as tools) into the plain values that
:class:`~resilient_stream.StreamClient` sends.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

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


def encode_image(image: Any) -> str:
    """bytes, a path, an ``ollama.Image`` or a base64 string -> base64 text (like ollama)."""
    dump = getattr(image, "model_dump", None)
    if dump is not None:  # ollama.Image serializes itself to base64
        value = dump()
        if isinstance(value, str):
            return value
        image = getattr(image, "value", image)
    if isinstance(image, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(image)).decode()
    if isinstance(image, Path):
        return base64.b64encode(image.read_bytes()).decode()
    if isinstance(image, str):
        try:
            p = Path(image)
            if p.exists():
                return base64.b64encode(p.read_bytes()).decode()
        except (OSError, ValueError):
            pass  # a long base64 string is not a valid path
        if image.rsplit(".", 1)[-1].lower() in ("png", "jpg", "jpeg", "webp"):
            raise ValueError(f"File {image} does not exist")
        try:
            base64.b64decode(image, validate=False)
        except (binascii.Error, ValueError):
            raise ValueError(
                "Invalid image data, expected base64 string or path to image file"
            ) from None
        return image
    raise ValueError(f"unsupported image type {type(image).__name__}")


def _plain(value: Any) -> Any:
    """pydantic models -> dicts (None fields dropped); other values unchanged."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(exclude_none=True)
    return value


def copy_messages(messages: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Like ollama's ``_copy_messages``: falsy fields are dropped, images encoded."""
    out: list[dict[str, Any]] = []
    for message in messages or []:
        images = None
        if isinstance(message, Mapping):
            items = dict(message)
        else:
            images = getattr(message, "images", None)  # keep ollama.Image objects un-dumped
            items = _plain(message)
            if not isinstance(items, dict):
                raise TypeError(f"a message must be a mapping or ollama.Message, got {message!r}")
        msg: dict[str, Any] = {}
        for key, value in items.items():
            if not value and key != "role":
                continue
            if key == "images":
                msg[key] = [encode_image(i) for i in (images or value)]
            elif key == "tool_calls":
                msg[key] = [_plain(c) for c in value]
            else:
                msg[key] = value
        out.append(msg)
    return out


def copy_tools(tools: Sequence[Any] | None) -> list[dict[str, Any]] | None:
    """Tools as JSON schema dicts; Python functions are converted with ollama's helper."""
    if not tools:
        return None
    out: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, Mapping):
            out.append(dict(tool))
        elif callable(tool) and not hasattr(tool, "model_dump"):
            out.append(_function_tool(tool))
        else:
            out.append(_plain(tool))
    return out


def _function_tool(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        from ollama._utils import convert_function_to_tool
    except ImportError:
        raise TypeError(
            "passing Python functions as tools needs the `ollama` package "
            "(pip install ollama); pass a JSON schema dict instead"
        ) from None
    result: dict[str, Any] = convert_function_to_tool(func).model_dump(exclude_none=True)
    return result


def plain_options(options: Any) -> dict[str, Any] | None:
    """``ollama.Options`` or a mapping -> dict without ``None`` values."""
    if options is None:
        return None
    value = _plain(options)
    return {k: v for k, v in dict(value).items() if v is not None}


def plain_format(fmt: Any) -> Any:
    """``""`` means no format (ollama drops it); a pydantic JSON schema dict passes through."""
    if fmt == "" or fmt is None:
        return None
    return fmt
