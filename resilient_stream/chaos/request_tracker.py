"""Which request an HTTP/2 stream carries, learned from the client's bytes (sans-I/O).

Stream ids and connection indexes follow timing once clients retry and resume
(a resumed request gets whatever id and connection come next), so per-stream
decisions keyed by them cannot be replayed. What a request *asks* can: the
:class:`RequestTracker` hashes each stream's request body (its DATA payload,
complete at END_STREAM) and names the stream ``"<sha256 prefix>#<n>"``, where
``n`` counts how many times the same body was seen before, from
:class:`RequestCounts` (so a retry of an identical request gets a draw of its
own). HPACK is not decoded, so the path is not part of the key; requests
without a body (GET) share the key of the empty body and are told apart by
``n`` only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import h2frames as h2

#: A tracker remembers at most this many streams per connection (oldest forgotten first).
MAX_TRACKED_STREAMS = 4096


class RequestCounts:
    """How many times each request body was seen: one per proxy, or shared by the
    proxies in front of replicas, so a request's n-th retry is the n-th wherever it lands."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def occurrence(self, digest: str) -> int:
        """The number of earlier requests with this body (and count this one)."""
        n = self._counts.get(digest, 0)
        self._counts[digest] = n + 1
        return n

    def seen(self) -> list[str]:
        """The key of every request seen (``"<digest>#<n>"``)."""
        return [f"{d}#{n}" for d, count in self._counts.items() for n in range(count)]

    def clear(self) -> None:
        self._counts.clear()

    def __len__(self) -> int:
        return len(self._counts)


class RequestTracker:
    """Feed it the client->server bytes of one connection; ask it for a stream's request key."""

    __slots__ = ("_counts", "_keys", "_off", "_pending", "_splitter")

    def __init__(self, counts: RequestCounts) -> None:
        self._counts = counts
        self._splitter = h2.FrameSplitter(expect_preface=True)
        self._pending: dict[int, Any] = {}  # stream id -> running sha256 of the body
        self._keys: dict[int, str] = {}
        self._off = False

    def feed(self, data: bytes) -> None:
        if self._off:
            return
        try:
            frames = self._splitter.feed(data)
        except h2.NotHttp2:
            self._off = True
            return
        for f in frames:
            if f.type == h2.DATA:
                h = self._pending.get(f.stream_id)
                if h is not None:
                    h.update(f.data())
                    if f.flags & h2.FLAG_END_STREAM:
                        self._finish(f.stream_id)
            elif f.type == h2.HEADERS:
                sid = f.stream_id
                if sid not in self._pending and sid not in self._keys:
                    self._pending[sid] = hashlib.sha256()
                    if len(self._pending) > MAX_TRACKED_STREAMS:
                        del self._pending[next(iter(self._pending))]
                if f.flags & h2.FLAG_END_STREAM and sid in self._pending:
                    self._finish(sid)  # no body, or trailers after it

    def _finish(self, stream_id: int) -> None:
        digest = self._pending.pop(stream_id).hexdigest()[:16]
        self._keys[stream_id] = f"{digest}#{self._counts.occurrence(digest)}"
        if len(self._keys) > MAX_TRACKED_STREAMS:
            del self._keys[next(iter(self._keys))]

    def key(self, stream_id: int) -> str | None:
        """The stream's request key, or None while its request is incomplete (or unknown)."""
        return self._keys.get(stream_id)
