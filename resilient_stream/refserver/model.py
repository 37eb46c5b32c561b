"""The reference model: a deterministic, continuation-consistent stand-in for an LLM.

Sans-I/O. The next token is a pure function of the whole context text (the
rendered prompt plus everything generated so far), computed with an
incremental hash: ``blake2b.update(token)`` then ``digest()`` is O(1) per
token. Because the hash only sees the text, re-prompting with
``prompt + output[:k]`` lands in exactly the state the original run was in
after ``k`` tokens, and continues with ``output[k:]``. That is the property a
resume layer needs from a greedy-decoding model, made exact.

The vocabulary mixes ASCII words, CJK, emoji (multi-byte and multi-codepoint
UTF-8), punctuation and newlines, so that UTF-8 sequences split across reads
and JSON escaping are exercised.

A stream ends when ``num_predict`` tokens were produced (``"length"``) or when
the hash says stop (``"stop"``); a stop is only possible right after a
sentence end (``. ! ?`` and their CJK forms), so texts end like sentences.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol

import msgspec

from resilient_stream.formats.ollama.types import Message

# --- vocabulary ------------------------------------------------------------

_WORDS = (  # noqa: SIM905
    "the a of and to in is it that was for on with as they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my "
    "over know water than call first who may down side been now find stream token network "
    "resume model server retry buffer window frame chunk byte line http socket"
).split()
_CAPITALIZED = ("The", "It", "We", "They", "This", "Streams", "Tokens", "Models")
_CJK = (
    "你", "好", "世界", "模型", "流", "的", "是", "在", "中文", "数据", "恢复", "网络",
    "こんにちは", "한국어",
)  # fmt: skip
_EMOJI = (
    "😀",  # 4-byte UTF-8
    "🚀",
    "✨",  # 3-byte UTF-8
    "👍🏽",  # emoji + skin tone modifier (2 code points)
    "👨‍👩‍👧",  # ZWJ family (5 code points)
    "🇯🇵",  # flag: two regional indicators
    "❤️",  # heart + variation selector 16
)
_PUNCT = (",", ";", ":", " -", "、", ' "', '"', "'s")
_SENTENCE_ENDS = (".", "!", "?", "。", "\uff01", "\uff1f")  # CJK full stop, ! and ?
_NEWLINES = ("\n", "\n\n")

#: Legal raw inside JSON strings, but ``str.splitlines`` (httpx ``aiter_lines``) splits on
#: them: opt-in tokens that break clients not framing on ``b"\n"`` only.
_LINE_SEPARATORS = ("\x85", "\u2028", "\u2029")

_BASE_TOKENS = (
    tuple(" " + w for w in _WORDS)
    + tuple(" " + w for w in _CAPITALIZED)
    + _CJK
    + tuple(" " + e for e in _EMOJI)
    + _EMOJI
    + _PUNCT
    + _SENTENCE_ENDS
    + _NEWLINES
)

_TABLE_BITS = 12
_TABLE_MASK = (1 << _TABLE_BITS) - 1


def _weight(token: str) -> int:
    if token in _SENTENCE_ENDS:
        return 22
    if token in _NEWLINES:
        return 6
    if token in _PUNCT:
        return 12
    if token.strip() in _EMOJI or token in _LINE_SEPARATORS:
        return 5
    if token in _CJK:
        return 9
    return 10


class Vocabulary:
    """Tokens (index = token id) with everything precomputed per token. Frozen: changing
    it changes every output."""

    __slots__ = ("json", "sentence_end_ids", "table", "token_bytes", "tokens")

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self.tokens = tokens
        #: Token text as UTF-8 bytes (what the hash is updated with).
        self.token_bytes = tuple(t.encode() for t in tokens)
        #: Token text as an encoded JSON string (quotes included), ready to splice.
        self.json = tuple(msgspec.json.encode(t) for t in tokens)
        #: Token ids after which the model may stop (the text ends like a sentence).
        self.sentence_end_ids = frozenset(i for i, t in enumerate(tokens) if t in _SENTENCE_ENDS)
        self.table = self._build_table()

    def _build_table(self) -> tuple[int, ...]:
        """A 4096-slot table of token ids, each repeated by its weight (deterministic)."""
        weights = [_weight(t) for t in self.tokens]
        total = sum(weights)
        table: list[int] = []
        for i, w in enumerate(weights):
            table.extend([i] * (w * (1 << _TABLE_BITS) // total))
        i = 0
        while len(table) < (1 << _TABLE_BITS):  # fill rounding gaps with words
            table.append(i % len(_WORDS))
            i += 1
        return tuple(table)


#: The default vocabulary.
DEFAULT_VOCAB: Final = Vocabulary(_BASE_TOKENS)
#: The default plus U+0085, U+2028, U+2029 (``line_separators=True`` on the server).
LINE_SEPARATOR_VOCAB: Final = Vocabulary(_BASE_TOKENS + _LINE_SEPARATORS)

VOCAB: Final = DEFAULT_VOCAB.tokens
SENTENCE_END_IDS: Final = DEFAULT_VOCAB.sentence_end_ids

DEFAULT_STOP_PROBABILITY: Final = 0.2
#: Probability that thinking ends at a sentence end (independent of stop_probability,
#: so ``stop_probability=0`` still gives content after thinking).
THINK_END_PROBABILITY: Final = 0.3
#: Output cap when ``num_predict`` is unset or negative (like a context limit).
DEFAULT_MAX_TOKENS: Final = 4096

# --- chat template ----------------------------------------------------------

ROLE_TAGS: Final = {
    "system": "<|system|>\n",
    "user": "<|user|>\n",
    "assistant": "<|assistant|>\n",
    "tool": "<|tool|>\n",
}
END_TAG: Final = "<|end|>\n"
THINK_OPEN: Final = "<think>\n"
THINK_CLOSE: Final = "\n</think>\n\n"


def render_chat(messages: Sequence[Message], *, think: bool) -> tuple[str, bool]:
    """Render messages into the context text; return ``(context, starts_in_thinking)``.

    A trailing assistant message is a prefill: it is left open so generation
    continues it. With ``think``, its ``thinking`` goes into an open think
    block when ``content`` is empty (so partial thinking continues), else into
    a closed block followed by the content. Earlier assistant turns keep only
    their content, like common templates.
    """
    parts: list[str] = []
    prefill: Message | None = None
    if messages and messages[-1].role == "assistant":
        prefill = messages[-1]
        messages = messages[:-1]
    for m in messages:
        parts.append(ROLE_TAGS.get(m.role, f"<|{m.role}|>\n"))
        parts.append(m.content)
        parts.append(END_TAG)
    parts.append(ROLE_TAGS["assistant"])
    thinking_phase = False
    if think:
        parts.append(THINK_OPEN)
        thinking = (prefill.thinking or "") if prefill is not None else ""
        content = prefill.content if prefill is not None else ""
        parts.append(thinking)
        if content:
            parts.append(THINK_CLOSE)
            parts.append(content)
        else:
            thinking_phase = True
    elif prefill is not None:
        parts.append(prefill.content)
    return "".join(parts), thinking_phase


def generate_messages(prompt: str, system: str | None) -> list[Message]:
    """The chat turns a non-raw ``/api/generate`` renders as (system, then one user turn)."""
    msgs = [Message(role="system", content=system)] if system else []
    msgs.append(Message(role="user", content=prompt))
    return msgs


def estimate_tokens(text: str) -> int:
    """A plausible prompt token count for ``prompt_eval_count`` (about 4 bytes per token)."""
    return len(text.encode()) // 4 + 1


# --- generation -------------------------------------------------------------


class TokenTable(Protocol):
    """What a token stream needs of a vocabulary: token texts and their JSON, by id."""

    @property
    def tokens(self) -> Sequence[str]: ...

    @property
    def json(self) -> Sequence[bytes]: ...


class TokenSource(Protocol):
    """A generation as the line streams drive it (:class:`Generation`, or
    :class:`~resilient_stream.refserver.formats.FormatGeneration` for ``format``)."""

    thinking: bool
    count: int
    done_reason: str | None

    @property
    def vocab(self) -> TokenTable: ...

    def step(self) -> int: ...

    def peek_done(self) -> bool: ...


class Generation:
    """One request's token generator. ``step()`` returns a token id, or -1 when done.

    ``thinking`` tells whether the token just returned belongs to the thinking
    phase. ``done_reason`` is set once ``step()`` returned -1.
    """

    __slots__ = (
        "_end",
        "_ends",
        "_hash",
        "_next",
        "_next_thinking",
        "_stop_threshold",
        "_table",
        "_token_bytes",
        "count",
        "done_reason",
        "max_tokens",
        "thinking",
        "vocab",
    )

    def __init__(
        self,
        context: str,
        *,
        thinking: bool = False,
        num_predict: int | None = None,
        stop_probability: float = DEFAULT_STOP_PROBABILITY,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        vocab: Vocabulary = DEFAULT_VOCAB,
    ) -> None:
        self.vocab = vocab
        self._table = vocab.table
        self._token_bytes = vocab.token_bytes
        self._ends = vocab.sentence_end_ids
        self._hash = hashlib.blake2b(context.encode(), digest_size=8)
        self._end = context.endswith(_SENTENCE_ENDS)
        self._stop_threshold = int(stop_probability * (1 << 20))
        self._next = -2  # -2: not decided yet
        self._next_thinking = thinking
        self.thinking = thinking
        self.count = 0
        self.max_tokens = max_tokens if num_predict is None or num_predict < 0 else num_predict
        self.done_reason: str | None = None

    def _decide(self) -> int:
        """Pick what follows the current context (cached until consumed)."""
        if self.count >= self.max_tokens:
            self._next = -1
            self.done_reason = "length"
            return -1
        x = int.from_bytes(self._hash.digest(), "little")
        if self._end:
            roll = (x >> _TABLE_BITS) & 0xFFFFF
            if self._next_thinking:
                if roll < _THINK_END_THRESHOLD:
                    # Thinking ends: the template closes the think block (not a token).
                    self._next_thinking = False
                    self._hash.update(_THINK_CLOSE_BYTES)
                    self._end = False
                    return self._decide()
            elif roll < self._stop_threshold:
                self._next = -1
                self.done_reason = "stop"
                return -1
        tok = self._table[x & _TABLE_MASK]
        self._next = tok
        return tok

    def peek_done(self) -> bool:
        """Whether the next ``step()`` ends the output (decides it now, O(1))."""
        nxt = self._next
        if nxt == -2:
            nxt = self._decide()
        return nxt < 0

    def next_is_thinking(self) -> bool:
        """After ``peek_done()``: whether the decided next token belongs to the thinking."""
        return self._next_thinking

    def step(self) -> int:
        nxt = self._next
        if nxt == -2:
            nxt = self._decide()
        if nxt < 0:
            return -1
        self._next = -2
        self.thinking = self._next_thinking
        self._hash.update(self._token_bytes[nxt])
        self._end = nxt in self._ends
        self.count += 1
        return nxt


_THINK_END_THRESHOLD: Final = int(THINK_END_PROBABILITY * (1 << 20))
_THINK_CLOSE_BYTES: Final = THINK_CLOSE.encode()


def run(gen: TokenSource) -> tuple[str, str]:
    """Drain a generation; return ``(content, thinking)`` (for tests and ``stream: false``)."""
    content: list[str] = []
    thinking: list[str] = []
    vocab = gen.vocab.tokens
    while (tok := gen.step()) >= 0:
        (thinking if gen.thinking else content).append(vocab[tok])
    return "".join(content), "".join(thinking)


def tokens(gen: TokenSource) -> list[tuple[str, bool]]:
    """Drain a generation into ``(token_text, is_thinking)`` pairs."""
    out: list[tuple[str, bool]] = []
    vocab = gen.vocab.tokens
    while (tok := gen.step()) >= 0:
        out.append((vocab[tok], gen.thinking))
    return out
