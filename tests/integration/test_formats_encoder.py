"""The wire formats' encoders: chunks back into wire bytes.

Without sockets, any chunks a decoder hands out encode to a body that decodes
to the same chunks (Ollama NDJSON, OpenAI SSE). Over a socket, what the
reference server sends is, line by line and event by event, what the encoder
makes of the chunks it decodes to.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.formats.ndjson import NdjsonFramer
from resilient_stream.formats.ollama import encoder as ollama_encoder
from resilient_stream.formats.ollama.framing import ChunkDecoder
from resilient_stream.formats.ollama.types import (
    ChatChunk,
    GenerateChunk,
    Logprob,
    Message,
    ToolCall,
    ToolCallFunction,
    TopLogprob,
)
from resilient_stream.formats.openai import encoder as openai_encoder
from resilient_stream.formats.openai.framing import DONE, OpenAIDecoder, OpenAIFramer
from resilient_stream.formats.openai.types import (
    ChatChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionChunk,
    Delta,
    ErrorInfo,
    FunctionCallDelta,
    ToolCallDelta,
    Usage,
)
from resilient_stream.formats.sse import SseParser
from resilient_stream.refserver import ReferenceServer

# --- strategies --------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=12)
maybe_text = st.none() | text
count = st.none() | st.integers(0, 2**40)
logprob = st.floats(allow_nan=False, allow_infinity=False, width=64)
logprobs = st.none() | st.lists(
    st.builds(
        Logprob,
        token=text,
        logprob=logprob,
        bytes=st.none() | st.lists(st.integers(0, 255), max_size=4),
        top_logprobs=st.none()
        | st.lists(st.builds(TopLogprob, token=text, logprob=logprob), max_size=2),
    ),
    max_size=2,
)
metrics = {
    "total_duration": count,
    "load_duration": count,
    "prompt_eval_count": count,
    "prompt_eval_duration": count,
    "eval_count": count,
    "eval_duration": count,
}
tool_calls = st.none() | st.lists(
    st.builds(
        ToolCall,
        function=st.builds(
            ToolCallFunction,
            name=text,
            arguments=st.dictionaries(text, st.integers() | text, max_size=2),
            index=st.none() | st.integers(0, 9),
        ),
        id=maybe_text,
        type=maybe_text,
    ),
    max_size=2,
)
generate_chunks = st.builds(
    GenerateChunk,
    model=text,
    created_at=text,
    response=text,
    thinking=maybe_text,
    done=st.booleans(),
    done_reason=maybe_text,
    context=st.none() | st.lists(st.integers(0, 2**31), max_size=4),
    logprobs=logprobs,
    **metrics,
)
chat_chunks = st.builds(
    ChatChunk,
    model=text,
    created_at=text,
    message=st.builds(
        Message,
        role=text,
        content=text,
        thinking=maybe_text,
        tool_calls=tool_calls,
        images=st.none() | st.lists(text, max_size=2),
        tool_name=maybe_text,
    ),
    done=st.booleans(),
    done_reason=maybe_text,
    logprobs=logprobs,
    **metrics,
)


def ndjson_decode(body: bytes, chunk_type: type[Any]) -> list[Any]:
    framer = NdjsonFramer()
    lines = framer.feed(body)
    assert framer.close() == b""
    return ChunkDecoder(chunk_type).decode_lines(lines)


# --- Ollama ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(generate_chunks, max_size=5))
def test_generate_chunks_survive_encode_then_decode(chunks: list[GenerateChunk]) -> None:
    assert ndjson_decode(ollama_encoder.encode_lines(chunks), GenerateChunk) == chunks


@settings(max_examples=300, deadline=None)
@given(st.lists(chat_chunks, max_size=5))
def test_chat_chunks_survive_encode_then_decode(chunks: list[ChatChunk]) -> None:
    assert ndjson_decode(ollama_encoder.encode_lines(chunks), ChatChunk) == chunks


def test_ollama_lines_carry_what_ollama_always_sends_in_its_order() -> None:
    line = ollama_encoder.encode_line(GenerateChunk(model="m", created_at="t"))
    assert line == b'{"model":"m","created_at":"t","response":"","done":false}\n'
    final = ChatChunk(model="m", created_at="t", done=True, done_reason="stop", eval_count=2)
    assert ollama_encoder.encode_line(final) == (
        b'{"model":"m","created_at":"t","message":{"role":"","content":""},'
        b'"done":true,"done_reason":"stop","eval_count":2}\n'
    )
    call = ToolCall(function=ToolCallFunction(name="f"))
    msg = Message(role="assistant", tool_calls=[call])
    assert b'"tool_calls":[{"function":{"name":"f","arguments":{}}}]' in (
        ollama_encoder.encode_line(ChatChunk(message=msg))
    )
    assert ollama_encoder.error_line("boom") == b'{"error":"boom"}\n'


@given(text, text, text, st.booleans(), st.booleans())
def test_ollama_text_affixes_splice_what_encode_line_writes(
    model: str, created_at: str, token: str, chat: bool, thinking: bool
) -> None:
    prefix, suffix = ollama_encoder.text_affixes(model, created_at, chat=chat, thinking=thinking)
    chunk: GenerateChunk | ChatChunk
    if chat:
        msg = Message(role="assistant", content="", thinking=token) if thinking else None
        msg = msg or Message(role="assistant", content=token)
        chunk = ChatChunk(model=model, created_at=created_at, message=msg)
    elif thinking:
        chunk = GenerateChunk(model=model, created_at=created_at, thinking=token)
    else:
        chunk = GenerateChunk(model=model, created_at=created_at, response=token)
    assert prefix + msgspec.json.encode(token) + suffix == ollama_encoder.encode_line(chunk)


# --- OpenAI ------------------------------------------------------------------------


def tool_call_deltas() -> st.SearchStrategy[list[ToolCallDelta]]:
    function = st.none() | st.builds(FunctionCallDelta, name=maybe_text, arguments=maybe_text)
    call = st.builds(
        ToolCallDelta, index=st.integers(0, 3), id=maybe_text, type=maybe_text, function=function
    )
    return st.lists(call, min_size=1, max_size=2)


nonempty = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
deltas = st.one_of(
    st.builds(Delta, content=nonempty, role=st.none() | st.just("assistant")),
    st.builds(Delta, reasoning_content=nonempty),
    st.builds(Delta, reasoning=nonempty, content=st.none() | nonempty),
    st.builds(Delta, refusal=nonempty),
    st.builds(Delta, tool_calls=tool_call_deltas()),
)
usages = st.none() | st.builds(
    Usage,
    prompt_tokens=st.integers(0, 10**6),
    completion_tokens=st.integers(0, 10**6),
    total_tokens=st.integers(0, 10**6),
    prompt_tokens_details=st.none() | st.just({"cached_tokens": 3}),
)
finish_reasons = st.sampled_from(["stop", "length", "tool_calls"])


@st.composite
def openai_streams(draw: st.DrawFn, chat: bool) -> list[Any]:
    """Chunks as the decoder hands them out: text chunks, then one final ``done`` chunk
    (its finish_reason, usage, and the stream's id, created, model)."""
    head: dict[str, Any] = {
        "id": draw(text),
        "created": draw(st.integers(0, 2**40)),
        "model": draw(text),
        # as the decoder makes a final chunk: the latest non-empty one
        "system_fingerprint": draw(st.none() | nonempty),
    }
    reason = draw(finish_reasons)
    usage = draw(usages)
    out: list[Any] = []
    if chat:
        for delta in draw(st.lists(deltas, max_size=4)):
            choice = ChatChoice(delta=delta, logprobs=draw(st.none() | st.just({"content": []})))
            out.append(ChatCompletionChunk(choices=[choice], **head))
        final = ChatChoice(delta=Delta(), finish_reason=reason)
        out.append(ChatCompletionChunk(choices=[final], usage=usage, done=True, **head))
    else:
        for piece in draw(st.lists(nonempty, max_size=4)):
            out.append(CompletionChunk(choices=[CompletionChoice(text=piece)], **head))
        ending = CompletionChoice(finish_reason=reason)
        out.append(CompletionChunk(choices=[ending], usage=usage, done=True, **head))
    return out


def sse_decode(body: bytes, chunk_type: type[Any], reads: int = 1) -> list[Any]:
    framer, decoder = OpenAIFramer(), OpenAIDecoder(chunk_type)
    out: list[Any] = []
    step = max(1, len(body) // reads)
    for i in range(0, len(body), step):
        out += decoder.decode_lines(framer.feed(body[i : i + step]))
    assert framer.close() == b""
    return out


@settings(max_examples=300, deadline=None)
@given(openai_streams(chat=True), st.integers(1, 40))
def test_chat_completion_chunks_survive_encode_then_decode(chunks: list[Any], reads: int) -> None:
    body = openai_encoder.encode_events(chunks)
    assert body.endswith(b"data: [DONE]\n\n")
    assert sse_decode(body, ChatCompletionChunk, reads) == chunks


@settings(max_examples=300, deadline=None)
@given(openai_streams(chat=False), st.integers(1, 40))
def test_completion_chunks_survive_encode_then_decode(chunks: list[Any], reads: int) -> None:
    assert sse_decode(openai_encoder.encode_events(chunks), CompletionChunk, reads) == chunks


def test_openai_events_carry_what_openai_always_sends_in_its_order() -> None:
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[ChatChoice()])
    assert openai_encoder.encode_event(chunk) == (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}\n\n'
    )
    final = CompletionChunk(
        id="c",
        choices=[CompletionChoice(finish_reason="stop")],
        usage=Usage(prompt_tokens=0, completion_tokens=2, total_tokens=2),
        done=True,
    )
    body = openai_encoder.encode_events([final])
    assert body == (
        b'data: {"id":"c","object":"text_completion","created":0,"model":"",'
        b'"choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}]}\n\n'
        b'data: {"id":"c","object":"text_completion","created":0,"model":"","choices":[],'
        b'"usage":{"prompt_tokens":0,"completion_tokens":2,"total_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    err = openai_encoder.encode_error(ErrorInfo(message="no", type="server_error", code=500))
    assert err == b'{"error":{"message":"no","type":"server_error","param":null,"code":500}}'


@given(text, st.integers(0, 2**40), text, nonempty, st.booleans(), st.booleans())
def test_openai_text_affixes_splice_what_encode_event_writes(
    id: str, created: int, model: str, token: str, chat: bool, thinking: bool
) -> None:
    prefix, suffix = openai_encoder.text_affixes(id, created, model, chat=chat, thinking=thinking)
    head: dict[str, Any] = {"id": id, "created": created, "model": model}
    chunk: ChatCompletionChunk | CompletionChunk
    if not chat:
        chunk = CompletionChunk(choices=[CompletionChoice(text=token)], **head)
    elif thinking:
        chunk = ChatCompletionChunk(
            choices=[ChatChoice(delta=Delta(reasoning_content=token))], **head
        )
    else:
        chunk = ChatCompletionChunk(choices=[ChatChoice(delta=Delta(content=token))], **head)
    assert prefix + msgspec.json.encode(token) + suffix == openai_encoder.encode_event(chunk)


# --- the reference server sends what the encoders write ------------------------------

MSGS = [{"role": "user", "content": "Hi"}]
OLLAMA_REQUESTS = [
    ("/api/generate", {"model": "m", "prompt": "Once", "options": {"num_predict": 12}}),
    ("/api/generate", {"model": "m", "prompt": "Hm", "think": True, "options": {"num_predict": 9}}),
    ("/api/chat", {"model": "m", "messages": MSGS, "options": {"num_predict": 12}}),
    ("/api/chat", {"model": "m", "messages": MSGS, "think": True, "options": {"num_predict": 9}}),
]
OPENAI_REQUESTS = [
    ("/v1/completions", {"model": "m", "prompt": "Once", "max_tokens": 12}),
    ("/v1/chat/completions", {"model": "m", "messages": MSGS, "max_tokens": 12}),
    ("/v1/chat/completions", {"model": "m", "messages": MSGS, "max_tokens": 9,
                              "reasoning_effort": "high",
                              "stream_options": {"include_usage": True}}),
]  # fmt: skip


@pytest.mark.timeout(30)
@pytest.mark.parametrize("final_chunk_text", [False, True])
async def test_the_reference_server_sends_what_the_encoders_write(final_chunk_text: bool) -> None:
    async with ReferenceServer(stop_probability=0.0, final_chunk_text=final_chunk_text) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            for path, req in OLLAMA_REQUESTS:
                body = (await http.post(path, json=req)).content
                chunk_type = ChatChunk if path == "/api/chat" else GenerateChunk
                lines = body.splitlines(keepends=True)
                assert len(lines) > 2
                for line in lines:
                    chunk = msgspec.json.decode(line, type=chunk_type)
                    assert ollama_encoder.encode_line(chunk) == line
                chunks = ndjson_decode(body, chunk_type)
                assert ollama_encoder.encode_lines(chunks) == body

            for path, req in OPENAI_REQUESTS:
                body = (await http.post(path, json={**req, "stream": True})).content
                chat = path == "/v1/chat/completions"
                chunk_type = ChatCompletionChunk if chat else CompletionChunk
                events = body.split(b"\n\n")
                assert events.pop() == b"" and events.pop() == b"data: " + DONE
                assert len(events) > 2
                records = [e.data for e in SseParser().feed(body)]
                for event, data in zip(events, records[:-1], strict=True):
                    chunk = msgspec.json.decode(data, type=chunk_type)
                    assert openai_encoder.encode_event(chunk) == event + b"\n\n"
                chunks = sse_decode(body, chunk_type)
                assert sse_decode(openai_encoder.encode_events(chunks), chunk_type) == chunks
