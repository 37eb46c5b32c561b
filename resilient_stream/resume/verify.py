"""Verified seams (sans-I/O): a resume proves itself before anything new is delivered.

When a stream breaks after output ``D`` was delivered, the next request is
built from ``D`` minus a held-back overlap (its last ``h`` characters, cut
where a word starts, which is also where a tokenizer starts a token: that
heals the tokenization at the seam). The server must regenerate the overlap
byte for byte; only then is what follows delivered. So the caller sees

* **verified**: the continuation reproduced the overlap; the overlap is
  dropped from it (the caller has it) and the rest is new text;
* **restart**: the continuation reproduced all of ``D`` (a server whose chat
  template closes the assistant turn starts the answer again, or one that echoes
  the carried text); all of ``D`` is dropped from it, exactly, not by similarity
  (the assembler flags it unless the request carried nothing or the counts show
  an echo: a new answer in another context may differ after ``D``);
* **diverged**: neither. Nothing is trimmed on a guess: the stream flags the
  seam (or raises, by ``on_divergence``) and continues from all of ``D``.

The overlap is chosen so that it is not also a prefix of ``D`` (not a
"border"), which keeps a verified overlap and a restart apart after ``h``
characters even on periodic text.
"""

from __future__ import annotations

from collections.abc import Sequence


def choose_overlap(
    delivered: str,
    pieces: Sequence[str],
    *,
    min_chars: int,
    max_chars: int,
    keep: int = 0,
) -> int:
    """How many trailing characters of ``delivered`` to hold back at a seam.

    ``pieces`` are the texts of the last chunks, in order: the overlap is a whole
    number of them, so the request ends where the server's own tokens ended (a
    chunk never splits a token), which is what heals the tokenization at the seam.
    Of the candidates that leave at least ``keep`` characters in the request (the
    request must carry more than the one before it, or a server that breaks at the
    same place would never get further) and are not also a prefix of ``delivered``
    (a "border"), the shortest of at least ``min_chars`` that starts with
    whitespace wins; else the shortest of at least ``min_chars``; else the longest
    shorter one. ``max_chars`` bounds the search. 0: nothing can be held back.
    """
    n = len(delivered)
    best_short = plain = 0
    h = 0
    for piece in reversed(pieces):
        h += len(piece)
        if h > n - keep or (h > max(max_chars, min_chars) and (plain or best_short)):
            break
        if h < n and delivered.startswith(delivered[n - h :]):
            continue  # a border: the overlap would also be the answer's beginning
        if h < min_chars:
            best_short = h
            continue
        if delivered[n - h].isspace():
            return h
        if not plain:
            plain = h
    return plain or best_short


class SeamCheck:
    """Checks one channel (content or thinking) of the text after one seam.

    ``feed`` returns what may be delivered now ("" while checking); ``cut`` is
    then how much of the continuation repeated what the caller already had.
    """

    __slots__ = (
        "_delivered",
        "_held",
        "_overlap",
        "_restarts",
        "cut",
        "diverged",
        "resolved",
        "restart",
    )

    def __init__(self, delivered: str, overlap: int, *, restarts: bool = True) -> None:
        """``restarts``: also recognise a continuation that reproduces all of
        ``delivered``. Exact only with an overlap that is not a border; with none,
        new text that happens to begin like the answer would be taken for a restart,
        so the caller asks for it only where another channel's overlap confirms."""
        self._delivered = delivered
        self._restarts = restarts and bool(delivered)
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

    @property
    def overlap_len(self) -> int:
        """Characters of the delivered text held back (the request leaves them out)."""
        return len(self._overlap)

    def settle(self) -> None:
        """Nothing held back and nothing arrived on this channel: decided, nothing cut
        (the other channel showed the continuation is not a restart)."""
        if not self.resolved and not self._overlap and not self._held:
            self.resolved = True

    def feed(self, text: str) -> str:
        if self.resolved:
            if self.diverged:
                self._held += text  # this attempt is abandoned: deliver none of it
                return ""
            return text
        held = self._held = self._held + text
        whole, overlap = self._delivered, self._overlap
        restarts = self._restarts and len(overlap) < len(whole)
        if restarts and held.startswith(whole):
            return self._decide(len(whole), restart=True)
        restart_alive = restarts and whole.startswith(held)
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
