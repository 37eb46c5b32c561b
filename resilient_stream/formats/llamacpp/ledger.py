"""Which token ids made the text delivered so far (sans-I/O): the core of token-exact resume.

Every chunk of a native ``/completion`` stream becomes a :class:`Piece`: its
text, how many tokens it took (the step in ``tokens_predicted``) and its ids
when the stream gave all of them. llama-server holds back the events of tokens
that end inside a UTF-8 character and then sends one event with the whole
character but only the last id (``server-context.cpp``, ``process_token``), so
a piece whose count is larger than its ids has ``ids=None``: the ids are
incomplete and that piece can only be sent back as text (the fallback; the
verified seam then checks what the server makes of it).

At a resume the ledger is asked for the prompt that continues after the text
the caller keeps (everything delivered minus the held-back overlap): the
caller's prompt, then each piece's ids, as one mixed array, which llama-server
tokenizes element by element (``tokenize_mixed``: only the first element, the
caller's prompt, gets the BOS). Text and ids line up only at the end of a
piece that carries text (a piece without text may hold bytes that a later
piece sends: stop-word look-ahead), so a prompt ends there.

A piece without its ids is where exactness would end. With ``cut_back`` the
prompt stops before it, and the rest of the kept text is to be *replayed*:
the server regenerates it from exact ids (the planner checks it byte for byte
and drops it before the caller's seam check sees the overlap). Without, that
piece goes back as text (the fallback, after a replay did not reproduce).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    #: Tokens it took (exact: the server's count).
    tokens: int
    #: Their ids, when the stream gave all of them (None: incomplete).
    ids: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class Continuation:
    """What a resumed request carries after the caller's prompt."""

    #: Prompt elements after the caller's prompt: ids, and text where ids are missing.
    elements: tuple[int | str, ...]
    #: Tokens those elements stand for (exact where the pieces are; text that no piece
    #: covers is counted by an upper bound, its UTF-8 bytes).
    tokens: int
    #: Pieces sent back as text because their ids were incomplete.
    text_pieces: int
    #: Characters of the kept text that no piece covered (sent as text).
    uncovered: int
    pieces: tuple[Piece, ...] = field(default=(), repr=False)
    #: Kept text the server is to regenerate after the elements (cut back before a
    #: piece without ids): checked and dropped by the planner.
    replay: str = ""

    @property
    def exact(self) -> bool:
        """Every carried token is sent as its id: no re-tokenization anywhere."""
        return self.text_pieces == 0 and self.uncovered == 0


class AttemptLedger:
    """The pieces of one attempt: what its request carried, then what it streamed."""

    __slots__ = ("_seen", "carried", "recorded")

    def __init__(self, carried: tuple[Piece, ...] = ()) -> None:
        self.carried = carried
        self.recorded: list[Piece] = []
        self._seen = 0  # tokens_predicted of the last chunk (per request)

    def record(self, text: str, ids: list[int] | None, predicted: int) -> None:
        """One chunk: its text, the ids it carried, the server's running count."""
        n_ids = len(ids) if ids else 0
        step = predicted - self._seen if predicted > 0 else n_ids
        if predicted > 0:
            self._seen = predicted
        if step <= 0 and not text and not n_ids:
            return
        step = max(step, n_ids, 1)
        complete = ids is not None and n_ids == step
        self.recorded.append(Piece(text, step, tuple(ids) if complete and ids else None))

    @property
    def generated(self) -> int:
        """Tokens generated for the caller by this chain of attempts (carried + streamed)."""
        return sum(p.tokens for p in self.carried) + sum(p.tokens for p in self.recorded)

    def continuation(self, kept: str, *, cut_back: bool = False) -> Continuation:
        """The prompt elements that continue after ``kept`` (the caller's text minus the
        overlap held back at the seam); ``cut_back``: stop before a piece without ids
        and leave the rest of ``kept`` to be replayed."""
        pieces = [*self.carried, *self.recorded]
        used: list[Piece] = []
        covered = 0
        aligned = 0  # pieces up to the last one that carries text
        for piece in pieces:
            end = covered + len(piece.text)
            if end > len(kept) or not kept.startswith(piece.text, covered):
                break
            if cut_back and piece.ids is None:
                break
            used.append(piece)
            covered = end
            if piece.text:
                aligned = len(used)
        used = used[:aligned]
        covered = sum(len(p.text) for p in used)
        elements: list[int | str] = []
        tokens = text_pieces = 0
        for piece in used:
            tokens += piece.tokens
            if piece.ids is not None:
                elements.extend(piece.ids)
            else:
                elements.append(piece.text)
                text_pieces += 1
        rest = kept[covered:]
        if cut_back and rest:
            return Continuation(
                elements=tuple(elements),
                tokens=tokens,
                text_pieces=0,
                uncovered=0,
                pieces=tuple(used),
                replay=rest,
            )
        if rest:
            elements.append(rest)
            tokens += len(rest.encode("utf-8"))
            used.append(Piece(rest, len(rest.encode("utf-8")), None))
        return Continuation(
            elements=tuple(elements),
            tokens=tokens,
            text_pieces=text_pieces,
            uncovered=len(rest),
            pieces=tuple(used),
        )
