"""Verified seams (sans-I/O): a resume proves itself before anything new is delivered.

When a stream breaks after output ``D`` was delivered, the next request is
built from ``D`` minus a held-back overlap (its last ``h`` characters, cut
where a word starts, which is also where a tokenizer starts a token: that
heals the tokenization at the seam). The server must regenerate the overlap
byte for byte; only then is what follows delivered. So the caller sees

* **verified**: the continuation reproduced the overlap; the overlap is
  dropped from it (the caller has it) and the rest is new text;
* **verified restart**: the continuation reproduced all of ``D`` (a server
  whose chat template closes the assistant turn starts the answer again); all
  of ``D`` is dropped from it, exactly, not by similarity;
* **diverged**: neither. Nothing is trimmed on a guess: the stream flags the
  seam (or raises, by ``on_divergence``) and continues from all of ``D``.

The overlap is chosen so that it is not also a prefix of ``D`` (not a
"border"), which keeps a verified overlap and a restart apart after ``h``
characters even on periodic text.
"""

from __future__ import annotations


def choose_overlap(delivered: str, *, min_chars: int, max_chars: int) -> int:
    """How many trailing characters of ``delivered`` to hold back at a seam.

    All of it when it is short; else the shortest tail of at least ``min_chars``
    (and at most ``max_chars``) that starts a word and is not also a prefix of
    ``delivered``; failing a word start, the shortest such tail at all.
    """
    n = len(delivered)
    if n <= min_chars:
        return n
    top = min(max_chars, n)
    fallback = 0
    for h in range(max(1, min_chars), top + 1):
        tail_start = n - h
        if delivered.startswith(delivered[tail_start:]):
            continue  # a border: the overlap would also be the answer's beginning
        if delivered[tail_start].isspace() or (tail_start and delivered[tail_start - 1].isspace()):
            return h
        if not fallback:
            fallback = h
    return fallback or min(max(1, min_chars), n)


class SeamCheck:
    """Checks one channel (content or thinking) of the text after one seam.

    ``feed`` returns what may be delivered now ("" while checking); ``cut`` is
    then how much of the continuation repeated what the caller already had.
    """

    __slots__ = ("_delivered", "_held", "_overlap", "cut", "diverged", "resolved", "restart")

    def __init__(self, delivered: str, overlap: int) -> None:
        self._delivered = delivered
        self._overlap = delivered[len(delivered) - overlap :] if overlap else ""
        self._held = ""
        #: The check is decided (verified, restart or diverged).
        self.resolved = not delivered
        #: Characters of the continuation that repeated delivered text (dropped).
        self.cut = 0
        #: The continuation reproduced all of the delivered text (a restart).
        self.restart = False
        #: The continuation did not reproduce the overlap (nor the whole answer).
        self.diverged = False

    @property
    def held(self) -> str:
        """The continuation held while checking (the whole of it, after divergence)."""
        return self._held

    @property
    def verified(self) -> bool:
        return self.resolved and not self.diverged

    def feed(self, text: str) -> str:
        if self.resolved:
            if self.diverged:
                self._held += text  # this attempt is abandoned: deliver none of it
                return ""
            return text
        held = self._held = self._held + text
        whole, overlap = self._delivered, self._overlap
        if held.startswith(whole):
            return self._decide(len(whole), restart=len(overlap) < len(whole))
        restart_alive = whole.startswith(held)
        if held.startswith(overlap):
            if not restart_alive:
                return self._decide(len(overlap))
            return ""  # a restart is still possible: the overlap alone does not decide
        if overlap.startswith(held) or restart_alive:
            return ""
        self.resolved = self.diverged = True
        return ""

    def flush(self) -> str:
        """The attempt ended while checking: the overlap decides (else diverged)."""
        if self.resolved:
            return ""
        if self._held.startswith(self._overlap):
            return self._decide(len(self._overlap))
        self.resolved = self.diverged = True
        return ""

    def _decide(self, cut: int, *, restart: bool = False) -> str:
        self.resolved = True
        self.restart = restart
        self.cut = cut
        out, self._held = self._held[cut:], ""
        return out
