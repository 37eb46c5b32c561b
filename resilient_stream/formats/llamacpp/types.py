"""The chunks of llama-server's native ``/completion`` stream (sans-I/O).

Read from the vendored llama.cpp sources (``tools/server/server-task.cpp``,
``server_task_result_cmpl_partial::to_json_non_oaicompat``): each SSE event is
``data: {...}`` with ``content`` (the text of this step), ``tokens`` (with
``return_tokens: true``: the id sampled at this step, one), ``tokens_predicted``
(tokens generated so far in this request) and ``stop``; the last event has
``stop: true`` and ``stop_type`` ("eos", "word", "limit"). There is no
``[DONE]``. While a multi-byte UTF-8 character is incomplete the server sends
nothing (``process_token``: ``incomplete``), and the event that completes it
carries only the last id: the count says how many ids are missing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..openai.types import ErrorInfo


class NativeChunk(msgspec.Struct, omit_defaults=True, gc=False, kw_only=True):
    """One event of ``/completion`` with ``stream: true``."""

    content: str = ""
    tokens: list[int] | None = None
    stop: bool = False
    tokens_predicted: int = 0
    tokens_evaluated: int = 0
    stop_type: str | None = None
    stopping_word: str | None = None
    model: str = ""
    id_slot: int | None = None
    timings: Any = None
    #: ``{"error": {...}}``: raised by the decoder, never delivered.
    error: ErrorInfo | str | None = None


#: How a native ``stop_type`` reads as an OpenAI ``finish_reason``.
FINISH_REASON: dict[str, str] = {"eos": "stop", "word": "stop", "limit": "length"}
