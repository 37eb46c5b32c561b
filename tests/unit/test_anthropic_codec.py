"""Anthropic Messages streaming, sans-I/O: framing, decoding, encoding, the chunk
adapter, the planner (prefill, whitespace, what is not resumed), the SDK wire gate and
recognition. No sockets."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from resilient_stream.errors import ServerReportedError
from resilient_stream.formats import adapter_for, framing
from resilient_stream.formats.anthropic import encoder
from resilient_stream.formats.anthropic.framing import AnthropicDecoder, AnthropicFramer, held_back
from resilient_stream.formats.anthropic.planner import AnthropicPlanner
from resilient_stream.formats.anthropic.types import (
    Delta,
    ErrorInfo,
    Event,
    MessageChunk,
    MessageParam,
    MessagesRequest,
)
from resilient_stream.formats.plan import AttemptPlan, Finished, NotResumable, Progress
from resilient_stream.sdk.recognise import recognise
from resilient_stream.sdk.wire import DONE, MORE, STOP, AnthropicSse

START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":'
    b'"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
    b'"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
)


def delta(text: str, index: int = 0, kind: str = "text_delta", field: str = "text") -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: text}}
    return b"event: content_block_delta\ndata: " + msgspec.json.encode(data) + b"\n\n"


END = (
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":3}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
BODY = START + delta("Hello") + delta(" wor") + delta("ld 世界") + END


def decode(body: bytes, step: int = 0) -> list[MessageChunk]:
    f, d = AnthropicFramer(), AnthropicDecoder(MessageChunk)
    step = step or len(body)
    out: list[MessageChunk] = []
    for i in range(0, len(body), step):
        out += d.decode_lines(f.feed(body[i : i + step]))
    return out


def text_of(chunks: list[MessageChunk]) -> str:
    a = adapter_for(MessageChunk)
    return "".join(a.texts(c)[0] for c in chunks)


# --- framing and decoding ------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 3, 17, 0])
def test_events_fold_into_one_chunk_per_delta_and_one_final_chunk(step: int) -> None:
    chunks = decode(BODY, step)
    assert len(chunks) == 4
    assert [ev.type for ev in chunks[0].before] == ["message_start", "content_block_start", "ping"]
    assert text_of(chunks) == "Hello world 世界"
    final = chunks[-1]
    assert final.done and [ev.type for ev in final.before] == ["content_block_stop"]
    a = adapter_for(MessageChunk)
    assert a.done_reason(final) == "end_turn" and a.attempt_tokens(final) == 3


def test_encoding_the_chunks_gives_events_that_decode_to_the_same_chunks() -> None:
    chunks = decode(BODY)
    body = encoder.encode_chunks(chunks)
    assert decode(body, 5) == chunks
    assert body.count(b"event: ") == 9 and body.endswith(encoder.MESSAGE_STOP)


def test_a_delta_whose_type_is_not_its_first_key_is_not_held() -> None:
    reordered = (
        b'data: {"index":0,"delta":{"type":"text_delta","text":"Hi"},'
        b'"type":"content_block_delta"}\n\n'
    )
    f = AnthropicFramer()
    assert f.feed(START) == []
    assert len(f.feed(reordered)) == 4  # the held events go with it
    # a string that spells a type key has its quotes escaped: still held
    assert held_back(b'{"type":"ping","note":"\\"type\\":\\"message_stop\\""}')


def test_a_body_without_message_stop_has_no_final_chunk() -> None:
    chunks = decode(START + delta("Hi") + END[: END.index(b"event: message_stop")])
    assert text_of(chunks) == "Hi" and not any(c.done for c in chunks)


@pytest.mark.parametrize(
    ("kind", "retryable"), [("overloaded_error", True), ("invalid_request_error", False)]
)
def test_an_error_event_raises_with_what_came_before(kind: str, retryable: bool) -> None:
    error = encoder.error_event(ErrorInfo(type=kind, message="boom"))
    with pytest.raises(ServerReportedError) as info:
        decode(START + delta("Hi") + error)
    assert info.value.retryable is retryable and kind in info.value.error
    assert text_of(info.value.chunks_before) == "Hi"


def test_text_affixes_match_the_encoder() -> None:
    head, tail = encoder.text_affixes(0)
    ev = Event(type="content_block_delta", index=0, delta=Delta(type="text_delta", text="a\n"))
    assert head + msgspec.json.encode("a\n") + tail == encoder.encode_event(ev)


# --- the adapter -----------------------------------------------------------------------


def test_adapter_maps_max_tokens_and_counts_every_attempt() -> None:
    a = adapter_for(MessageChunk)
    local = a.final_chunk("length")
    assert a.done_reason(local) == "length"
    assert b'"stop_reason":"max_tokens"' in encoder.encode_chunk(local)
    final = a.finalize(decode(BODY)[-1], 42)
    assert a.attempt_tokens(final) == 42
    assert b'"usage":{"output_tokens":42}' in encoder.encode_chunk(final)
    first = decode(BODY)[0]
    assert not a.has_payload(first)  # its opening events are not tokens
    cut = a.with_texts(first, "lo", "")
    assert a.texts(cut) == ("lo", None) and cut.before == first.before


# --- the planner -----------------------------------------------------------------------


def planner(**fields: Any) -> AnthropicPlanner:
    base: dict[str, Any] = {
        "model": "claude-ref",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    return AnthropicPlanner(msgspec.convert({**base, **fields}, MessagesRequest))


def body_of(plan: Any) -> dict[str, Any]:
    assert isinstance(plan, AttemptPlan)
    out: dict[str, Any] = msgspec.json.decode(plan.body)
    return out


def opened(p: AnthropicPlanner) -> None:
    """The first attempt's chunks pass its convert (the SDK got a message_start)."""
    plan = p.initial()
    assert plan.convert is not None
    for chunk in decode(START + delta("Hello")):
        plan.convert(chunk)


def test_resume_prefills_the_partial_and_asks_for_what_is_left() -> None:
    p = planner()
    opened(p)
    plan = p.next(Progress(text="Hello world", tokens=3, exact=False))
    body = body_of(plan)
    assert body["stream"] is True and body["max_tokens"] == 97
    assert body["messages"][-1] == {"role": "assistant", "content": "Hello world"}
    assert isinstance(plan, AttemptPlan) and plan.convert is not None
    resumed = decode(START + delta(" again"))
    first = plan.convert(resumed[0])
    assert first.before == [Event(type="ping")]  # no second message_start / block start


def test_trailing_whitespace_is_left_out_and_dropped_exactly_from_the_continuation() -> None:
    p = planner()
    opened(p)
    plan = p.next(Progress(text="Hello\n\n", tokens=2))
    assert body_of(plan)["messages"][-1]["content"] == "Hello"
    assert isinstance(plan, AttemptPlan) and plan.convert is not None
    a = adapter_for(MessageChunk)
    texts = [a.texts(plan.convert(c))[0] for c in decode(START + delta("\n") + delta("\n Hi"))]
    assert texts == ["", " Hi"]
    # a continuation that says something else: nothing dropped (the seam check flags it)
    plan = p.next(Progress(text="Hello\n", tokens=2))
    assert isinstance(plan, AttemptPlan) and plan.convert is not None
    assert a.texts(plan.convert(decode(START + delta(" Hi"))[0]))[0] == " Hi"


def test_a_callers_own_prefill_is_extended() -> None:
    p = planner(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "{"}])
    body = body_of(p.next(Progress(text='"a": 1, ', tokens=4)))
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": '{"a": 1,'},
    ]


def test_a_start_over_after_output_drops_the_second_opening() -> None:
    p = planner()
    assert p.next(Progress()).convert == p.initial().convert  # before output: a plain retry
    opened(p)
    plan = p.next(Progress())
    assert isinstance(plan, AttemptPlan) and plan.convert is not None
    assert body_of(plan)["messages"] == [{"role": "user", "content": "Hi"}]
    assert plan.convert(decode(START + delta("Hello"))[0]).before == [Event(type="ping")]


def test_budget_used_up_finishes_without_a_request() -> None:
    p = planner(max_tokens=3)
    assert p.next(Progress(text="abc", tokens=3)) == Finished("length")


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"model": "claude-opus-4-6"}, "prefill"),
        ({"model": "claude-sonnet-4-6-20260101"}, "prefill"),
    ],
)
def test_what_cannot_be_prefilled_is_not_resumed(fields: dict[str, Any], why: str) -> None:
    plan = planner(**fields).next(Progress(text="Hello", tokens=1))
    assert isinstance(plan, NotResumable) and why in plan.reason


def test_older_models_are_resumed() -> None:
    for model in ("claude-sonnet-4-5-20250929", "claude-3-7-sonnet-latest", "claude-haiku-4-5"):
        assert isinstance(planner(model=model).next(Progress(text="a", tokens=1)), AttemptPlan)


def test_a_tool_use_block_or_a_second_block_is_not_resumed() -> None:
    tool = (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}\n\n'
    )
    body = START + delta("Hi") + tool + delta('{"x"', 1, "input_json_delta", "partial_json")
    p = planner()
    convert = p.initial().convert
    assert convert is not None
    for chunk in decode(body):
        convert(chunk)
    plan = p.next(Progress(text="Hi", tokens=1))
    assert isinstance(plan, NotResumable) and "tool_use" in plan.reason


def test_the_table_lists_the_framing() -> None:
    f = framing("anthropic")
    assert f.accept == "text/event-stream"
    assert isinstance(f.new_framer(1024), AnthropicFramer)


# --- the SDK transport's gate and recognition -----------------------------------------


def test_wire_scan_forwards_whole_events_and_stops_at_an_error() -> None:
    w = AnthropicSse()
    assert w.scan(START) == (0, MORE)  # text-less events wait for the first delta
    buf = START + delta("Hi")
    assert w.scan(buf) == (len(buf), MORE)
    assert w.scan(buf + delta("x")[:10]) == (len(buf), MORE)
    assert w.scan(delta("a") + END) == (len(delta("a") + END), DONE)
    error = encoder.error_event(ErrorInfo(type="overloaded_error", message="x"))
    assert w.scan(delta("a") + error) == (len(delta("a")), STOP)
    assert w.scan(delta("error")) == (len(delta("error")), MORE)  # text that says error


def request(body: dict[str, Any]) -> tuple[httpx.Request, bytes]:
    raw = msgspec.json.encode(body)
    return httpx.Request("POST", "http://h:1/v1/messages", content=raw), raw


def test_recognise_streaming_messages_only() -> None:
    fields = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    call = recognise(*request({**fields, "stream": True, "container": "c"}), "generic")
    assert call is not None and call.wire is AnthropicSse and call.base == "http://h:1"
    assert call.caller_type is MessageChunk
    assert body_of(call.planner.initial())["container"] == "c"  # unknown fields are kept
    whole = recognise(*request(fields), "generic")  # not streamed: upgraded
    assert whole is not None and whole.upgraded and body_of(whole.planner.initial())["stream"]
    assert recognise(*request(fields), "generic", upgrade=False) is None
    tools = {**fields, "tools": [{"name": "f", "input_schema": {}}]}
    assert recognise(*request(tools), "generic") is None  # not text only: passes through
    odd = {**fields, "stream": True, "messages": [{"role": "user", "content": "x", "z": 1}]}
    assert recognise(*request(odd), "generic") is None


def test_message_param_rejects_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"role": "user", "content": "x", "z": 1}, MessageParam)
