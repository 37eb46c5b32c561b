"""How many tokens a chunk took, when the server does not say (sans-I/O).

Servers count tokens only here and there: llama-server's ``timings.predicted_n``
on every chunk (``timings_per_token``), vLLM's ``usage`` on every chunk
(``stream_options.continuous_usage_stats``), our reference server's running
counts, and otherwise only at the end (Ollama's ``eval_count``, OpenAI's
``usage``). Between those, a chunk's tokens are unknown, and one chunk may hold
several tokens (llama.cpp holds back the tokens of an incomplete UTF-8
character; a stop-sequence prefix or a reasoning parser can hold back any
text). Counting one token per chunk then undercounts, and a resumed request
asks for more than is left.

So an uncounted chunk is counted by an **upper bound**, never by a guess:

* ``"bytes"``: its UTF-8 bytes. A byte-level tokenizer's token is at least one
  byte of text, so no server can have generated more tokens than that for it,
  however it groups tokens into chunks. (Tokens the server generates but never
  delivers, such as reasoning markers its parser strips, are not in any text;
  the bound has no way to see them.)
* ``"utf8"``: one token, plus one per continuation byte of its characters
  (``1 + bytes - characters``): for servers that put several tokens in one
  chunk only to complete a UTF-8 character (llama-cpp-python 0.3.36's stream:
  each chunk is the shortest run of tokens that decodes).

Chunks with a payload besides text (tool calls) count its JSON bytes as well.
"""

from __future__ import annotations

from collections.abc import Callable

#: (text, thinking) -> an upper bound of the tokens a chunk carrying them took.
Bound = Callable[[str, str], int]


def bytes_bound(text: str, thinking: str) -> int:
    return max(1, len(text.encode()) + len(thinking.encode()))


def utf8_bound(text: str, thinking: str) -> int:
    n = len(text.encode()) - len(text) + len(thinking.encode()) - len(thinking)
    return 1 + n


BOUNDS: dict[str, Bound] = {"bytes": bytes_bound, "utf8": utf8_bound}


def bound_for(name: str) -> Bound:
    try:
        return BOUNDS[name]
    except KeyError:
        raise ValueError(f"unknown token bound {name!r}; known: {sorted(BOUNDS)}") from None
