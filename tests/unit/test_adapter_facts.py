"""``ChunkAdapter.facts``: the assembler's one call per chunk answers what the four
questions it replaced answer (``is_done``, ``texts``, ``running_tokens``,
``has_payload``), for every adapter, on chunks that exercise each branch."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from resilient_stream.formats import CHUNK_ADAPTERS
from resilient_stream.formats.anthropic.types import MessageChunk
from resilient_stream.formats.ollama.types import ChatChunk, GenerateChunk
from resilient_stream.formats.openai.types import ChatCompletionChunk, CompletionChunk

SAMPLES: dict[type[Any], list[str]] = {
    GenerateChunk: [
        '{"response": "hi", "done": false}',
        '{"response": "", "thinking": "hm", "done": false, "eval_count": 3}',
        '{"response": "", "done": true, "done_reason": "stop", "eval_count": 9}',
    ],
    ChatChunk: [
        '{"message": {"role": "assistant", "content": "hi"}, "done": false}',
        '{"message": {"role": "assistant", "content": "", "thinking": "x"}, "done": false,'
        ' "eval_count": 2}',
        '{"message": {"role": "assistant", "content": ""}, "done": true, "eval_count": 5}',
        '{"message": {"role": "assistant", "content": "", "tool_calls": [{"function":'
        ' {"name": "f", "arguments": {"x": 1}}}]}, "done": false}',
    ],
    ChatCompletionChunk: [
        '{"choices": []}',
        '{"choices": [{"index": 0, "delta": {"content": "hi"}}]}',
        '{"choices": [{"index": 0, "delta": {"reasoning_content": "r"}}],'
        ' "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}',
        '{"choices": [{"index": 0, "delta": {"reasoning": "q"}}], "timings": {"predicted_n": 7}}',
        '{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "done": true}',
        '{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t",'
        ' "function": {"name": "f", "arguments": "{}"}}]}}]}',
    ],
    CompletionChunk: [
        '{"choices": []}',
        '{"choices": [{"index": 0, "text": "hi"}], "timings": {"predicted_n": 2}}',
        '{"choices": [{"index": 0, "text": "", "finish_reason": "length"}], "done": true}',
    ],
    MessageChunk: [
        '{"event": {"type": "content_block_delta", "index": 0,'
        ' "delta": {"type": "text_delta", "text": "hi"}}}',
        '{"event": {"type": "content_block_delta", "index": 0,'
        ' "delta": {"type": "thinking_delta", "thinking": "t"}}}',
        '{"event": {"type": "message_delta", "usage": {"output_tokens": 3}}, "done": true}',
        '{"event": {"type": "content_block_delta", "index": 1,'
        ' "delta": {"type": "input_json_delta", "partial_json": "{}"}}}',
        "{}",
    ],
}


@pytest.mark.parametrize("chunk_type", list(CHUNK_ADAPTERS), ids=lambda t: t.__name__)
def test_facts_answer_what_is_done_texts_and_running_tokens_answer(
    chunk_type: type[Any],
) -> None:
    adapter = CHUNK_ADAPTERS[chunk_type]
    samples = SAMPLES[chunk_type]
    for raw in samples:
        chunk = msgspec.json.decode(raw, type=chunk_type)
        want = (
            adapter.is_done(chunk),
            *adapter.texts(chunk),
            adapter.running_tokens(chunk),
            adapter.has_payload(chunk),
        )
        assert adapter.facts(chunk) == want, raw
    # the samples reach both answers of is_done and a running count where there is one
    decoded = [msgspec.json.decode(raw, type=chunk_type) for raw in samples]
    assert {adapter.is_done(c) for c in decoded} == {True, False}
    if chunk_type not in (GenerateChunk, CompletionChunk):  # the types that can carry one
        assert {adapter.has_payload(c) for c in decoded} == {True, False}
    assert all(t in SAMPLES for t in CHUNK_ADAPTERS)
