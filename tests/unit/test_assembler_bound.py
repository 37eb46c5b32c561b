"""A chunk the server does not count (Ollama's, until the last) is bounded by its
bytes: the assembler's shortcut for ASCII text gives what ``bytes_bound`` gives."""

from __future__ import annotations

import msgspec

from resilient_stream.formats.ollama.types import (
    ChatChunk,
    GenerateChunk,
    Message,
    ToolCall,
    ToolCallFunction,
)
from resilient_stream.resume.accounting import bytes_bound
from resilient_stream.resume.assembler import StreamAssembler

TEXTS = ["", "a", " tok", "héllo", "日本", "x" * 300, "\n", "é"]
THINKING = [None, None, None, "hm", None, "思考", None, ""]
PAIRS = list(zip(TEXTS, THINKING, strict=True))


def test_uncounted_generate_chunks_add_their_byte_bound() -> None:
    asm = StreamAssembler(GenerateChunk)
    out = asm.accept([GenerateChunk(response=t, thinking=th) for t, th in PAIRS])
    assert len(out) == len(TEXTS)
    assert asm.tokens == sum(bytes_bound(t, th or "") for t, th in PAIRS)
    assert not asm.tokens_exact


def test_uncounted_chat_chunks_add_their_byte_bound() -> None:
    asm = StreamAssembler(ChatChunk)
    chunks = [
        ChatChunk(message=Message(role="assistant", content=t, thinking=th)) for t, th in PAIRS
    ]
    asm.accept(chunks)
    assert asm.tokens == sum(bytes_bound(t, th or "") for t, th in PAIRS)


def test_an_uncounted_tool_call_chunk_is_bounded_by_its_json_too() -> None:
    """A tool call is output the server generated: its JSON bounds its tokens, beside
    the (ASCII) text of the same chunk."""
    call = ToolCall(function=ToolCallFunction(name="get_weather", arguments={"city": "Oslo"}))
    chunk = ChatChunk(message=Message(role="assistant", content="ok", tool_calls=[call]))
    asm = StreamAssembler(ChatChunk)
    asm.accept([chunk])
    assert asm.tokens == bytes_bound("ok", "") + len(msgspec.json.encode(chunk))
