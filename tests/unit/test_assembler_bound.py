"""A chunk the server does not count (Ollama's, until the last) is bounded by its
bytes: the assembler's shortcut for ASCII text gives what ``bytes_bound`` gives."""

from __future__ import annotations

from resilient_stream.formats.ollama.types import ChatChunk, GenerateChunk, Message
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
