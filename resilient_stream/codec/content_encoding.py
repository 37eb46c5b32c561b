"""Incremental decoding of a compressed response body (sans-I/O).

Streaming requests ask for ``Accept-Encoding: identity``: compression holds
tokens back until a compressor block fills. A proxy in between (nginx with
``gzip on`` for ``application/x-ndjson``, a CDN, envoy) may compress anyway,
so a body that arrives with ``Content-Encoding`` is decoded piece by piece,
as it comes, before it is framed: gzip and deflate with :mod:`zlib`; br and
zstd only when a well-kept library for them is already installed (``brotli``
/ ``brotlicffi``, ``zstandard``). Anything else is a clear, permanent error.
"""

from __future__ import annotations

import importlib
import zlib
from typing import Any, Protocol

from ..errors import ProtocolError

#: What streaming requests ask for.
IDENTITY = "identity"


class UnsupportedEncodingError(ProtocolError):
    """The body is compressed with a coding this installation cannot decode."""

    retryable = False


class Inflater(Protocol):
    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Zlib:
    """gzip, or deflate (zlib-wrapped as RFC 9110 says, or raw as some servers send)."""

    __slots__ = ("_obj", "_probe", "coding")

    def __init__(self, coding: str) -> None:
        self.coding = coding
        wbits = 16 + zlib.MAX_WBITS if coding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._obj = zlib.decompressobj(wbits)
        # deflate: the bytes seen until the zlib wrapper is confirmed (else: raw deflate)
        self._probe: bytes | None = b"" if coding == "deflate" else None

    def decompress(self, data: bytes) -> bytes:
        if self._probe is not None:
            self._probe += data
            try:
                out = self._obj.decompress(data)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                data, self._probe = self._probe, None
                return self._checked(data)
            if out:
                self._probe = None
            return out
        return self._checked(data)

    def _checked(self, data: bytes) -> bytes:
        try:
            return self._obj.decompress(data)
        except zlib.error as exc:
            raise _corrupt(self.coding, exc) from exc

    def flush(self) -> bytes:
        try:
            return self._obj.flush()
        except zlib.error as exc:
            raise _corrupt(self.coding, exc) from exc


class _Brotli:
    __slots__ = ("_obj",)

    def __init__(self, module: Any) -> None:
        self._obj = module.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        obj = self._obj
        out = obj.process(data) if hasattr(obj, "process") else obj.decompress(data)
        return bytes(out)

    def flush(self) -> bytes:
        return b""


class _Zstd:
    __slots__ = ("_obj",)

    def __init__(self, module: Any) -> None:
        self._obj = module.ZstdDecompressor().decompressobj()

    def decompress(self, data: bytes) -> bytes:
        return bytes(self._obj.decompress(data))

    def flush(self) -> bytes:
        return b""


class _Chain:
    """Several codings ("gzip, br"): undone in reverse order of application."""

    __slots__ = ("_steps",)

    def __init__(self, steps: list[Inflater]) -> None:
        self._steps = steps

    def decompress(self, data: bytes) -> bytes:
        for step in self._steps:
            data = step.decompress(data)
        return data

    def flush(self) -> bytes:
        data = b""
        for step in self._steps:
            data = step.decompress(data) + step.flush()
        return data


def _optional(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _one(coding: str) -> Inflater:
    if coding in ("gzip", "x-gzip", "deflate"):
        return _Zlib(coding)
    if coding == "br":
        module = _optional("brotli", "brotlicffi")
        if module is not None:
            return _Brotli(module)
    elif coding == "zstd":
        module = _optional("zstandard")
        if module is not None:
            return _Zstd(module)
    raise UnsupportedEncodingError(
        f"the response body is compressed with {coding!r}, which cannot be decoded here "
        "(gzip and deflate always can; br needs `brotli`, zstd needs `zstandard`); the "
        "request asked for identity, so a proxy in between compressed it"
    )


def inflater_for(content_encoding: str | None) -> Inflater | None:
    """The decoder for a ``Content-Encoding`` header value; None for an identity body."""
    if not content_encoding:
        return None
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != IDENTITY]
    if not codings:
        return None
    steps = [_one(c) for c in reversed(codings)]
    return steps[0] if len(steps) == 1 else _Chain(steps)


def _corrupt(coding: str, exc: zlib.error) -> ProtocolError:
    return ProtocolError(f"the {coding}-compressed response body is corrupt ({exc})")
