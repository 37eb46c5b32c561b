"""The SDK transport's sans-I/O parts: the pass-through gates and the one-body collector.

The gates decide which received bytes reach the SDK untouched; the engine replays
exactly those after a failure, so they must end on record boundaries, never past an
error record, never right after a record the OpenAI framer would hold back, and
must spot the record that ends the stream.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from resilient_stream.formats.ollama import encoder as ollama_encoder
from resilient_stream.formats.ollama.types import ChatChunk, GenerateChunk, Message
from resilient_stream.formats.openai import encoder as openai_encoder
from resilient_stream.formats.openai.framing import OpenAIDecoder, OpenAIFramer, held_back
from resilient_stream.formats.openai.types import (
    ChatChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionChunk,
    Delta,
    FunctionCallDelta,
    ToolCallDelta,
    Usage,
)
from resilient_stream.sdk.assemble import Collector
from resilient_stream.sdk.wire import DONE, MORE, STOP, Ndjson, Sse

# --- NDJSON ------------------------------------------------------------------------------


def line(text: str, done: bool = False) -> bytes:
    return ollama_encoder.encode_line(GenerateChunk(model="m", response=text, done=done))


def test_ndjson_forwards_whole_lines_and_keeps_a_partial_one() -> None:
    a, b = line("Hel"), line("lo")
    assert Ndjson().scan(a + b) == (len(a + b), MORE)
    assert Ndjson().scan(a + b[:10]) == (len(a), MORE)
    assert Ndjson().scan(b[:10]) == (0, MORE)


def test_ndjson_done_line_ends_the_stream_and_nothing_after_it_counts() -> None:
    a, final = line("Hi"), line("", done=True)
    assert Ndjson().scan(a + final + b"garbage") == (len(a + final), DONE)
    spaced = b'{"model":"m","response":"","done": true}\n'
    assert Ndjson().scan(a + spaced) == (len(a + spaced), DONE)


def test_ndjson_text_that_quotes_done_true_is_not_the_end() -> None:
    a = line('he wrote "done":true and "error": no')
    assert b'\\"done\\":true' in a
    assert Ndjson().scan(a) == (len(a), MORE)


def test_ndjson_error_line_is_never_forwarded() -> None:
    a, err = line("Hi"), ollama_encoder.error_line("model crashed")
    assert Ndjson().scan(a + err + line("x")) == (len(a), STOP)
    assert Ndjson().scan(err) == (0, STOP)


def _plain(wire: Ndjson, buf: bytes) -> bool:
    """The pass-through loop's inlined gate (``PassThrough.body``), as it reads there."""
    assert wire.plain is not None
    return (
        bool(buf) and buf[-1] == 10 and buf.find(wire.plain[0]) < 0 and buf.find(wire.plain[1]) < 0
    )


def test_ndjson_plain_gate_passes_only_what_the_scan_forwards_whole() -> None:
    wire = Ndjson()
    a, b, final = line("Hel"), line("lo"), line("", done=True)
    counted = a[:-2] + b',"eval_count":3}\n'  # the reference server's shape
    err = ollama_encoder.error_line("model crashed")
    passed = 0
    for buf in (
        a, a + b, counted, counted + a, a + final, final, err, a + err, a[:10], a + b[:10],
        line("it is true"), line('say "error"'), b"", b"\n",
    ):  # fmt: skip
        if _plain(wire, buf):
            passed += 1
            assert wire.scan(buf) == (len(buf), MORE), buf
    # a, a + b, counted, counted + a, b"\n", and the quoted "error" (escaped: \\"error\\")
    assert passed == 6
    assert Sse().plain is None  # SSE: held-back chunks (its gate: test_passthrough_prefix)


# --- SSE ---------------------------------------------------------------------------------


def chat_chunk(
    content: str | None = None, role: str | None = None, finish: str | None = None
) -> ChatCompletionChunk:
    delta = Delta(role=role, content=content)
    return ChatCompletionChunk(
        id="c1", created=1, model="m", choices=[ChatChoice(delta=delta, finish_reason=finish)]
    )


def event(chunk: ChatCompletionChunk) -> bytes:
    return openai_encoder.encode_event(chunk)


def test_sse_text_events_pass_and_a_text_less_one_waits_for_text() -> None:
    role, text = event(chat_chunk("", role="assistant")), event(chat_chunk("Hi"))
    assert held_back(role[6:-2]) and not held_back(text[6:-2])
    assert Sse().scan(text) == (len(text), MORE)
    assert Sse().scan(role) == (0, MORE)  # the framer would hold it: so do we
    assert Sse().scan(role + text) == (len(role + text), MORE)  # flushed with the text
    assert Sse().scan(text + role) == (len(text), MORE)


def test_sse_finish_usage_and_done_go_together() -> None:
    text = event(chat_chunk("Hi"))
    finish = event(chat_chunk(finish="stop"))
    assert Sse().scan(text + finish) == (len(text), MORE)  # finish held until [DONE]
    end = openai_encoder.DONE_EVENT
    assert Sse().scan(text + finish + end) == (len(text + finish + end), DONE)


def test_sse_error_event_stops_before_it() -> None:
    text = event(chat_chunk("Hi"))
    err = b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
    assert Sse().scan(text + err) == (len(text), STOP)
    vllm = b'data: {"object":"error","message":"boom"}\n\n'
    assert Sse().scan(text + vllm) == (len(text), STOP)


def test_sse_crlf_events_and_comments_take_the_slow_path_to_the_same_answer() -> None:
    text = event(chat_chunk("Hi")).replace(b"\n", b"\r\n")
    comment = b": keep-alive\r\n\r\n"
    assert Sse().scan(text) == (len(text), MORE)
    assert Sse().scan(text + comment) == (len(text), MORE)
    assert Sse().scan(text + comment + text) == (len(text + comment + text), MORE)


@pytest.mark.parametrize(
    "record",
    [
        b'{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"content":""},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"content":"\\"content\\":\\""},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"reasoning_content":"x"},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"text":"Hi","finish_reason":null}]}',
        b'{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}],"usage":{"total_tokens":3}}',
        b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hi"}}],"created":1}',
        b'{"choices":[{"finish_reason":"stop","index":0,"delta":{"content":"Hi"}}],"created":1}',
        b'{"choices":[{"index":0,"text":"","finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}',
        b'{"error":{"message":"x"},"choices":[{"delta":{"content":"a"},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n',
    ],
)
def test_sse_one_event_fast_path_decides_as_held_back_and_the_framer_do(record: bytes) -> None:
    """The one-event read is decided without held_back's call (scan inlines its first
    case): whatever the record, the answer is the general path's."""
    buf = b"data: " + record + b"\n\n"
    slow = Sse()._slow(buf)
    assert Sse().scan(buf) == slow
    if b"\n" not in record and b'"error"' not in record:
        assert (slow == (len(buf), MORE)) == (not held_back(record))


@pytest.mark.parametrize("size", [1, 7, 50, 160, 10_000])
def test_sse_gate_over_any_reads_forwards_the_body_and_only_what_the_framer_delivers(
    size: int,
) -> None:
    """Fed in reads of ``size`` bytes as passthrough.py feeds it: at every point the
    forwarded bytes are whole events the framer hands over (it holds nothing of them),
    and at the end they are the whole body, its end spotted."""
    chunks = [chat_chunk("", role="assistant")] + [chat_chunk(t) for t in ("Hel", "lo", " w")]
    final = msgspec.structs.replace(chat_chunk(finish="length"), usage=Usage(1, 3, 4), done=True)
    body = b"".join(map(event, chunks)) + openai_encoder.encode_events([final])
    gate, pending, forwarded, what = Sse(), b"", b"", MORE
    for i in range(0, len(body), size):
        buf = pending + body[i : i + size]
        end, what = gate.scan(buf)
        forwarded, pending = forwarded + buf[:end], buf[end:]
        framer = OpenAIFramer()
        records = framer.feed(forwarded)
        assert framer.pending == 0 or forwarded == body
        assert sum(len(r) for r in records) <= len(forwarded)
        if what == DONE:
            break
    assert what == DONE and forwarded == body
    decoded = OpenAIDecoder(ChatCompletionChunk).decode_lines(OpenAIFramer().feed(body))
    assert "".join(c.choices[0].delta.content or "" for c in decoded if c.choices) == "Hello w"


# --- one JSON body from the chunks -------------------------------------------------------


def test_collector_ollama_generate_is_the_final_chunk_with_the_whole_response() -> None:
    c = Collector(GenerateChunk)
    for piece in ("Hel", "lo"):
        c.add(GenerateChunk(model="m", response=piece))
    c.add(GenerateChunk(model="m", done=True, done_reason="stop", eval_count=2))
    body = json.loads(c.body())
    assert body["response"] == "Hello" and body["done"] is True
    assert body["eval_count"] == 2 and body["done_reason"] == "stop"


def test_collector_ollama_chat_carries_the_whole_message_and_tool_calls() -> None:
    from resilient_stream.formats.ollama.types import ToolCall, ToolCallFunction

    call = ToolCall(function=ToolCallFunction(name="f", arguments={"x": 1}))
    c = Collector(ChatChunk)
    c.add(ChatChunk(model="m", message=Message(role="assistant", content="A", thinking="t")))
    c.add(ChatChunk(model="m", message=Message(role="assistant", tool_calls=[call])))
    c.add(ChatChunk(model="m", message=Message(role="assistant"), done=True, eval_count=2))
    message = json.loads(c.body())["message"]
    assert message["content"] == "A" and message["thinking"] == "t"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": {"x": 1}}


def test_collector_openai_chat_completion_merges_tool_call_deltas() -> None:
    def tool(index: int, name: str | None, args: str, id: str | None = None) -> ToolCallDelta:
        return ToolCallDelta(index=index, id=id, function=FunctionCallDelta(name, args))

    c = Collector(ChatCompletionChunk)
    c.add(chat_chunk("Hi", role="assistant"))
    for delta in (tool(0, "get", '{"a"', id="t0"), tool(0, None, ":1}"), tool(1, "put", "{}")):
        c.add(ChatCompletionChunk(id="c1", choices=[ChatChoice(delta=Delta(tool_calls=[delta]))]))
    final = msgspec.structs.replace(
        chat_chunk(finish="tool_calls"), usage=Usage(5, 4, 9), done=True
    )
    c.add(final)
    body = json.loads(c.body())
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 4
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Hi"
    calls = choice["message"]["tool_calls"]
    assert [t["function"]["name"] for t in calls] == ["get", "put"]
    assert calls[0]["id"] == "t0" and calls[0]["function"]["arguments"] == '{"a":1}'


def test_collector_openai_text_completion() -> None:
    c = Collector(CompletionChunk)
    for t in ("a", "b"):
        c.add(CompletionChunk(id="x", choices=[CompletionChoice(text=t)]))
    c.add(
        CompletionChunk(
            id="x",
            choices=[CompletionChoice(finish_reason="length")],
            usage=Usage(1, 2, 3),
            done=True,
        )
    )
    body = json.loads(c.body())
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "ab" and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
