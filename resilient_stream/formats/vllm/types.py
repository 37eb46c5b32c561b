"""The chunks of vLLM's streams with ``return_token_ids: true`` (sans-I/O).

Read from vLLM's serving code (``vllm/entrypoints/openai/completion/serving.py``,
``chat_completion/serving.py``) and its test
``tests/entrypoints/openai/test_return_token_ids.py``:

* ``/v1/completions``: every chunk's ``choices[0].token_ids`` holds the ids of
  that engine step (a step whose token ends inside a UTF-8 character streams
  its id with ``text: ""``); the first chunk also has
  ``choices[0].prompt_token_ids``. The last token's chunk has
  ``finish_reason``; with ``include_usage`` a ``choices: []`` chunk with
  ``usage`` follows, then ``[DONE]``.
* ``/v1/chat/completions``: the first chunk is the role (``content: ""``) with
  the rendered prompt's ids at the top level (``prompt_token_ids``); then
  deltas whose ``choices[0].token_ids`` "may not be present in all chunks"
  (a reasoning parser that hides reasoning drops them).

A vLLM older than ``return_token_ids`` accepts the field and ignores it (its
request models allow extra fields and log a warning: ``OpenAIBaseModel``,
``model_config = ConfigDict(extra="allow")``), so these fields are then absent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..openai.types import Delta, ErrorInfo, Usage


class VllmCompletionChoice(msgspec.Struct, omit_defaults=True, gc=False):
    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    stop_reason: Any = None
    logprobs: Any = None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None


class VllmChatChoice(msgspec.Struct, omit_defaults=True, gc=False):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None
    logprobs: Any = None
    token_ids: list[int] | None = None


class _VllmChunkBase(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    id: str = ""
    created: int = 0
    model: str = ""
    system_fingerprint: str | None = None
    usage: Usage | None = None
    #: ``{"error": {...}}`` (or vLLM's older ``{"object": "error", "message": ...}``):
    #: raised by the decoder, never delivered.
    error: ErrorInfo | str | None = None
    message: str | None = None
    #: Ours, never on the wire: the final chunk, made by the decoder at ``[DONE]``.
    done: bool = False


class VllmCompletionChunk(_VllmChunkBase, kw_only=True):
    object: str = "text_completion"
    choices: list[VllmCompletionChoice] = msgspec.field(default_factory=list)

    def ids(self) -> list[int] | None:
        return self.choices[0].token_ids if self.choices else None

    def prompt_ids(self) -> list[int] | None:
        return self.choices[0].prompt_token_ids if self.choices else None


class VllmChatChunk(_VllmChunkBase, kw_only=True):
    object: str = "chat.completion.chunk"
    choices: list[VllmChatChoice] = msgspec.field(default_factory=list)
    prompt_token_ids: list[int] | None = None

    def ids(self) -> list[int] | None:
        return self.choices[0].token_ids if self.choices else None

    def prompt_ids(self) -> list[int] | None:
        return self.prompt_token_ids


VllmChunk = VllmCompletionChunk | VllmChatChunk
