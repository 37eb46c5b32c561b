"""OpenAI-compatible chunks without sockets: the record framer, the decoder's folding of
role/finish/usage into one final chunk, error records, and the resume planner."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.errors import MalformedChunkError, ServerReportedError, TruncatedStreamError
from resilient_stream.formats import adapter_for, framing
from resilient_stream.formats.openai.framing import MAX_HELD, OpenAIDecoder, OpenAIFramer
from resilient_stream.formats.openai.planner import OpenAIPlanner
from resilient_stream.formats.openai.types import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    CompletionChunk,
    CompletionRequest,
)
from resilient_stream.formats.plan import AttemptPlan, Finished, NotResumable, Progress
from resilient_stream.formats.sse import EventTooLargeError


def event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def chat_event(content: str | None = None, *, role: str | None = None, finish: str | None = None,
               **delta: Any) -> bytes:  # fmt: skip
    d: dict[str, Any] = dict(delta)
    if role is not None:
        d["role"] = role
    if content is not None:
        d["content"] = content
    choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
    return event({"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m",
                  "choices": [choice]})  # fmt: skip


USAGE = event({"id": "c1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3,
                                                      "total_tokens": 7}})  # fmt: skip
DONE = b"data: [DONE]\n\n"
STOP = chat_event(None, finish="stop")

VLLM_BODY = (
    chat_event("", role="assistant")
    + chat_event("Hel")
    + chat_event("lo 世界")
    + chat_event(" 🚀")
    + chat_event(None, finish="stop")
    + USAGE
    + DONE
)


def run(
    body: bytes, cuts: list[int] | None = None, tp: type[Any] = ChatCompletionChunk
) -> list[Any]:
    framer = OpenAIFramer(1 << 16)
    decoder = OpenAIDecoder(tp)
    out: list[Any] = []
    pos = 0
    for cut in [*sorted(cuts or []), len(body)]:
        out.extend(decoder.decode_lines(framer.feed(body[pos:cut])))
        pos = cut
    return out


def text_of(chunks: list[Any]) -> str:
    adapter = adapter_for(type(chunks[0]))
    return "".join(adapter.texts(c)[0] for c in chunks)


def test_text_chunks_then_one_final_chunk_with_finish_reason_and_usage() -> None:
    chunks = run(VLLM_BODY)
    assert [c.done for c in chunks] == [False, False, False, True]
    assert text_of(chunks) == "Hello 世界 🚀"
    assert chunks[0].choices[0].delta.role == "assistant"  # the role-only chunk folded in
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == 7
    assert (final.id, final.model, final.created) == ("c1", "m", 5)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_split_of_a_body_gives_the_same_chunks(data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(VLLM_BODY)), max_size=15))
    assert run(VLLM_BODY, cuts) == run(VLLM_BODY)


def test_text_less_records_are_held_until_text_or_done_arrives() -> None:
    framer = OpenAIFramer()
    assert framer.feed(chat_event("", role="assistant")) == []
    assert len(framer.feed(chat_event("a"))) == 2
    assert framer.feed(chat_event(None, finish="length")) == []
    assert framer.feed(USAGE) == []
    assert len(framer.feed(DONE)) == 3


def test_body_without_done_gives_no_final_chunk_and_close_drops_held_records() -> None:
    framer = OpenAIFramer()
    decoder = OpenAIDecoder(ChatCompletionChunk)
    chunks = decoder.decode_lines(framer.feed(chat_event("a") + chat_event(None, finish="stop")))
    assert [c.done for c in chunks] == [False]
    assert framer.close() == b""


def test_finish_reason_on_a_text_chunk_moves_to_the_final_chunk() -> None:
    chunks = run(chat_event("end", finish="length") + DONE)
    assert [c.done for c in chunks] == [False, True]
    assert chunks[0].choices[0].finish_reason is None
    assert chunks[-1].choices[0].finish_reason == "length"


def test_reasoning_and_tool_calls_count_as_payload() -> None:
    call = [{"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}]
    body = chat_event(reasoning_content="hmm") + chat_event(tool_calls=call) + STOP + DONE
    chunks = run(body)
    adapter = adapter_for(ChatCompletionChunk)
    assert adapter.texts(chunks[0]) == ("", "hmm")
    assert adapter.has_payload(chunks[1])
    assert chunks[-1].done


def test_ollama_style_reasoning_field_is_read() -> None:
    (chunk, _) = run(chat_event(reasoning="think") + STOP + DONE)
    assert adapter_for(ChatCompletionChunk).texts(chunk) == ("", "think")


def test_completion_chunks() -> None:
    def ev(text: str, finish: str | None = None) -> bytes:
        return event({"id": "x", "object": "text_completion", "choices": [
            {"index": 0, "text": text, "finish_reason": finish}]})  # fmt: skip

    chunks = run(ev("Once") + ev(" upon") + ev("", "length") + DONE, tp=CompletionChunk)
    assert text_of(chunks) == "Once upon"
    assert chunks[-1].done and chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("record", "retryable"),
    [
        ({"error": {"message": "llama runner died", "type": "server_error", "code": 500}}, True),
        ({"error": {"message": "bad", "type": "invalid_request_error", "code": 400}}, False),
        ({"object": "error", "message": "engine crashed", "type": "InternalError"}, True),
        ({"error": "model 'x' not found"}, False),
    ],
)
def test_error_records_raise_with_the_chunks_before(
    record: dict[str, Any], retryable: bool
) -> None:
    framer = OpenAIFramer()
    decoder = OpenAIDecoder(ChatCompletionChunk)
    with pytest.raises(ServerReportedError) as info:
        decoder.decode_lines(framer.feed(chat_event("a") + chat_event("b") + event(record)))
    assert info.value.retryable is retryable
    assert text_of(info.value.chunks_before) == "ab"


def test_malformed_record_raises_with_the_chunks_before() -> None:
    framer = OpenAIFramer()
    decoder = OpenAIDecoder(ChatCompletionChunk)
    with pytest.raises(MalformedChunkError) as info:
        decoder.decode_lines(framer.feed(chat_event("a") + b"data: {not json\n\n"))
    assert text_of(info.value.chunks_before) == "a"


def test_sse_framing_is_registered() -> None:
    f = framing("sse")
    assert isinstance(f.new_framer(100), OpenAIFramer)
    assert isinstance(f.new_decoder(CompletionChunk), OpenAIDecoder)


# --- adapters -----------------------------------------------------------------------------


def test_finalize_counts_every_attempts_tokens_in_usage() -> None:
    final = run(VLLM_BODY)[-1]
    adapter = adapter_for(ChatCompletionChunk)
    out = adapter.finalize(final, 40)
    assert out.usage.completion_tokens == 40 and out.usage.total_tokens == 44
    assert adapter.done_reason(out) == "stop" and adapter.prompt_tokens(out) == 4
    local = adapter.final_chunk("length")
    assert local.done and adapter.done_reason(local) == "length"


def test_done_without_any_finish_reason_is_a_truncation_not_a_success() -> None:
    """llama-cpp-python ends a running stream with [DONE] and no finish_reason when
    another request arrives: the text before it is kept, the end is an interruption."""
    framer = OpenAIFramer()
    decoder = OpenAIDecoder(ChatCompletionChunk)
    with pytest.raises(TruncatedStreamError) as info:
        decoder.decode_lines(framer.feed(chat_event("Hel") + chat_event("lo") + DONE))
    assert [c.choices[0].delta.content for c in info.value.chunks_before] == ["Hel", "lo"]
    assert info.value.retryable


def test_with_texts_keeps_the_reasoning_field_the_server_used() -> None:
    adapter = adapter_for(ChatCompletionChunk)
    (chunk, _) = run(chat_event("ab", reasoning="xy") + STOP + DONE)
    cut = adapter.with_texts(chunk, "b", "y")
    assert adapter.texts(cut) == ("b", "y") and cut.choices[0].delta.reasoning == "y"


# --- planner ------------------------------------------------------------------------------

_dec = msgspec.json.Decoder(dict[str, Any])


def body(plan: AttemptPlan | Finished | NotResumable) -> dict[str, Any]:
    assert isinstance(plan, AttemptPlan)
    assert plan.framing == "sse"
    return _dec.decode(plan.body)


def chat_request(**fields: Any) -> ChatCompletionRequest:
    msgs = [ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")]
    return ChatCompletionRequest(model="m", messages=msgs, **fields)


def test_chat_resume_appends_an_assistant_prefill_and_shrinks_max_tokens() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    planner = OpenAIPlanner(
        chat_request(
            max_tokens=50,
            max_completion_tokens=60,
            tools=tools,
            response_format={"type": "json_object"},
            stream_options={"include_usage": True},
            extra_body={"top_k": 1},
        )
    )
    first = body(planner.initial())
    assert first["stream"] is True and "continue_final_message" not in first
    resumed = body(planner.next(Progress(text="part", thinking="", tokens=20)))
    assert resumed["messages"][-1] == {"role": "assistant", "content": "part"}
    assert resumed["max_tokens"] == 30 and resumed["max_completion_tokens"] == 40
    assert resumed["tools"] == tools and resumed["response_format"] == {"type": "json_object"}
    assert resumed["stream_options"] == {"include_usage": True} and resumed["top_k"] == 1


def test_vllm_flavor_asks_to_continue_the_final_message() -> None:
    planner = OpenAIPlanner(chat_request(), flavor="vllm")
    resumed = body(planner.next(Progress(text="p", thinking="t", tokens=2)))
    assert resumed["continue_final_message"] is True
    assert resumed["add_generation_prompt"] is False
    assert resumed["messages"][-1] == {
        "role": "assistant",
        "content": "p",
        "reasoning_content": "t",
    }


def test_ollama_flavor_sends_reasoning_as_reasoning() -> None:
    planner = OpenAIPlanner(chat_request(), flavor="ollama")
    resumed = body(planner.next(Progress(text="", thinking="t", tokens=1)))
    assert resumed["messages"][-1] == {"role": "assistant", "content": "", "reasoning": "t"}


def test_a_callers_trailing_assistant_message_is_extended() -> None:
    req = chat_request()
    req.messages.append(ChatMessage(role="assistant", content="Sure: "))
    resumed = body(OpenAIPlanner(req).next(Progress(text="one", tokens=1)))
    assert resumed["messages"][-1] == {"role": "assistant", "content": "Sure: one"}
    assert len(resumed["messages"]) == 3


def test_used_up_budget_finishes_locally() -> None:
    assert OpenAIPlanner(chat_request(max_tokens=5)).next(Progress(text="x", tokens=5)) == (
        Finished("length")
    )
    req = CompletionRequest(model="m", prompt="p", max_tokens=3)
    assert OpenAIPlanner(req).next(Progress(text="x", tokens=3)) == Finished("length")


def test_openai_flavor_is_not_resumable_after_output_but_restarts_before() -> None:
    planner = OpenAIPlanner(chat_request(), flavor="openai")
    assert isinstance(planner.next(Progress(text="x", tokens=1)), NotResumable)
    assert planner.next(Progress()) == planner.initial()


def test_completion_resume_extends_the_prompt_and_drops_echo() -> None:
    req = CompletionRequest(model="m", prompt="Once", max_tokens=10, echo=True, stop=["\n"])
    resumed = body(OpenAIPlanner(req).next(Progress(text=" upon", tokens=1)))
    assert resumed["prompt"] == "Once upon" and resumed["max_tokens"] == 9
    assert "echo" not in resumed and resumed["stop"] == ["\n"]
    assert OpenAIPlanner(req).initial().path == "/v1/completions"


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.binary(max_size=60)
        | st.sampled_from([b"data: ", b"\n\n", b"[DONE]", b'{"choices":[', b'{"error":', b"\r"]),
        max_size=30,
    )
)
def test_garbage_gives_chunks_or_typed_errors_with_bounded_memory(pieces: list[bytes]) -> None:
    limit = 200
    framer = OpenAIFramer(limit)
    decoder = OpenAIDecoder(ChatCompletionChunk)
    for piece in pieces:
        try:
            chunks = decoder.decode_lines(framer.feed(piece))
        except (MalformedChunkError, ServerReportedError, TruncatedStreamError, EventTooLargeError):
            return
        assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
        assert framer.pending <= limit * (MAX_HELD + 2)
