"""The HTTP/2 header list of an httpx request, checked by us.

h2's generic outbound header validation costs ~10 us per request and is off
(h2setup.py); this is the check that replaces it.
"""

from __future__ import annotations

import re

import httpx

# RFC 9113 section 8.2.1: no CR/LF/NUL in values; names are lowercase tokens.
_BAD_VALUE_BYTES = re.compile(rb"[\r\n\x00]")
_BAD_HEADER_BYTES = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")

# Connection-specific headers are forbidden in HTTP/2 (RFC 9113 section 8.2.2).
_HOP_BY_HOP = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def request_headers(request: httpx.Request) -> list[tuple[bytes, bytes]]:
    """HTTP/2 header list for an httpx request (pseudo-headers first, lowercase names)."""
    url = request.url
    headers = [
        (b":method", request.method.encode("ascii")),
        (b":authority", url.netloc),
        (b":scheme", url.raw_scheme),
        (b":path", url.raw_path),
    ]
    for name, value in request.headers.raw:
        lname = name.lower()
        if lname not in _HOP_BY_HOP:
            if _BAD_HEADER_BYTES.search(lname) or _BAD_VALUE_BYTES.search(value):
                raise httpx.LocalProtocolError(
                    f"invalid header {name!r}: HTTP/2 header names must be tokens and "
                    "values must not contain CR, LF or NUL"
                )
            headers.append((lname, value))
    return headers
