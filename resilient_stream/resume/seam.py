"""Cutting text a server repeats at a resume seam (sans-I/O).

After a resume, a server continues a prefilled answer. Ollama sends only the
new text, but some servers (or gateways) echo part of the prefill back. The
user must see neither repeated nor missing text, so right after a seam the
new text is held until it is clear whether it starts with a tail of what was
already delivered:

* while the held text is still the beginning of some suffix of the partial
  output (within ``max_overlap`` characters), keep holding;
* as soon as it is not, cut the longest suffix/prefix overlap of at least
  ``min_overlap`` characters and release the rest.

``min_overlap`` keeps a continuation that merely *happens* to start like the
partial's tail (" the" after "... the") from being cut: below it, matching text
is taken as new. Holding is bounded by ``max_overlap`` characters and only
happens at seams, never on the steady-state hot path.
"""

from __future__ import annotations


class SeamStitcher:
    """Decides how much of the text after one seam repeats the text before it."""

    __slots__ = ("_best", "_candidates", "_held", "_max", "_min", "_tail", "cut", "resolved")

    def __init__(self, before: str, *, min_overlap: int = 16, max_overlap: int = 4096) -> None:
        self._tail = before[-max_overlap:] if max_overlap else ""
        self._min = max(1, min_overlap)
        self._max = max_overlap
        self._held = ""
        self._best = 0  # longest suffix seen echoed in full so far
        # Start positions p (in _tail) whose suffix _tail[p:] could still be echoed.
        n = len(self._tail)
        self._candidates = list(range(max(0, n - max_overlap), n - self._min + 1))
        #: True once the overlap is known; ``cut`` is then its length.
        self.resolved = not self._candidates
        self.cut = 0

    @property
    def held(self) -> str:
        return self._held

    def feed(self, text: str) -> str:
        """Add text after the seam; return what may be released now ("" while holding)."""
        if self.resolved:
            return text
        self._held += text
        held = self._held
        tail = self._tail
        n = len(tail)
        alive = []
        for p in self._candidates:
            suffix_len = n - p
            if len(held) >= suffix_len:
                if held.startswith(tail[p:]):
                    self._best = max(self._best, suffix_len)  # the whole suffix is echoed
            elif tail.startswith(held, p):
                alive.append(p)  # still a possible echo: need more text
        self._candidates = alive
        if alive and len(held) < self._max:
            return ""
        return self._resolve(self._best)

    def flush(self) -> str:
        """End of stream while holding: release the held text after the best overlap."""
        if self.resolved:
            return ""
        return self._resolve(self._best)

    def _resolve(self, overlap: int) -> str:
        self.resolved = True
        self.cut = overlap if overlap >= self._min else 0
        out = self._held[self.cut :]
        self._held = ""
        self._candidates = []
        return out
