"""The llama-server capability paths, sans-I/O: the id ledger, the planner, chat templates,
capability classification."""

from __future__ import annotations

import json

import pytest

from resilient_stream.capabilities import classify
from resilient_stream.errors import InvalidRequestError
from resilient_stream.formats import framing
from resilient_stream.formats.llamacpp.ledger import AttemptLedger, Piece
from resilient_stream.formats.llamacpp.planner import LlamaServerPlanner
from resilient_stream.formats.llamacpp.template import ChatTemplate, TemplateChatPlanner
from resilient_stream.formats.llamacpp.types import NativeChunk
from resilient_stream.formats.openai.types import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    StreamOptions,
)
from resilient_stream.formats.plan import AttemptPlan, Finished, Progress


def chunk(text: str, ids: list[int], predicted: int, **kw: object) -> NativeChunk:
    return NativeChunk(content=text, tokens=ids, tokens_predicted=predicted, **kw)  # type: ignore[arg-type]


# --- ledger ---------------------------------------------------------------------------


def test_ledger_keeps_ids_and_marks_pieces_whose_ids_the_stream_left_out() -> None:
    led = AttemptLedger()
    led.record("Hel", [10], 1)
    led.record("lo", [11], 2)
    led.record("日", [99], 5)  # three tokens, one id: the first two were held back
    led.record(" x", [12], 6)
    assert [p.ids for p in led.recorded] == [(10,), (11,), None, (12,)]
    assert [p.tokens for p in led.recorded] == [1, 1, 3, 1]
    assert led.generated == 6
    cont = led.continuation("Hello日 x")
    assert cont.elements == (10, 11, "日", 12)
    assert cont.tokens == 6 and cont.text_pieces == 1 and not cont.exact


def test_continuation_ends_at_a_piece_boundary_and_sends_uncovered_text_as_text() -> None:
    led = AttemptLedger()
    for n, (text, tok) in enumerate([("a", 1), (" b", 2), (" c", 3)], 1):
        led.record(text, [tok], n)
    exact = led.continuation("a b")
    assert exact.elements == (1, 2) and exact.tokens == 2 and exact.exact
    # kept text that ends inside a piece: the rest goes as text, counted by its bytes
    partial = led.continuation("a b c!")
    assert partial.elements == (1, 2, 3, "!") and partial.tokens == 4 and partial.uncovered == 1
    # delivered text that does not match the pieces (another attempt's text)
    other = led.continuation("a X")
    assert other.elements == (1, " X") and other.tokens == 1 + 2


def test_a_trailing_piece_without_text_is_not_carried() -> None:
    """A stop-word look-ahead: the token's bytes come with a later piece, so ids and
    text line up only at the end of a piece that carries text."""
    led = AttemptLedger()
    led.record("a", [1], 1)
    led.record("", [2], 2)  # held: its text is not sent yet
    cont = led.continuation("a")
    assert cont.elements == (1,) and cont.tokens == 1


def test_carried_pieces_count_once_across_attempts() -> None:
    first = AttemptLedger()
    first.record("ab", [1], 1)
    first.record("cd", [2], 2)
    cont = first.continuation("ab")
    second = AttemptLedger(cont.pieces)
    second.record("cd", [2], 1)  # the regenerated overlap: tokens_predicted restarts
    second.record("ef", [3], 2)
    assert second.generated == 3
    assert second.continuation("abcdef").elements == (1, 2, 3)


# --- planner --------------------------------------------------------------------------


def planner(**kw: object) -> LlamaServerPlanner:
    req = CompletionRequest(model="m", prompt="P", max_tokens=10, **kw)  # type: ignore[arg-type]
    return LlamaServerPlanner(req)


def test_initial_request_is_native_with_token_ids_and_mapped_fields() -> None:
    p = planner(temperature=0.0, seed=3, extra_body={"top_k": 1, "repeat_penalty": 1.0})
    plan = p.initial()
    body = json.loads(plan.body)
    assert plan.path == "/completion" and plan.framing == "llamacpp"
    assert body == {
        "model": "m",
        "prompt": "P",
        "temperature": 0.0,
        "seed": 3,
        "top_k": 1,
        "repeat_penalty": 1.0,
        "n_predict": 10,
        "stream": True,
        "return_tokens": True,
    }


def test_resume_sends_the_prompt_then_the_ids_and_asks_for_exactly_what_is_left() -> None:
    p = planner(stream_options=StreamOptions(include_usage=True))
    plan = p.initial()
    assert plan.convert is not None
    out = [plan.convert(chunk(t, [i], n)) for n, (t, i) in enumerate([("a", 7), ("é", 8)], 1)]
    assert [c.choices[0].text for c in out] == ["a", "é"]
    nxt = p.next(Progress(text="aé", tokens=2))
    assert isinstance(nxt, AttemptPlan)
    body = json.loads(nxt.body)
    assert body["prompt"] == ["P", 7, 8] and body["n_predict"] == 8
    assert nxt.convert is not None
    nxt.convert(chunk("b", [9], 1, tokens_evaluated=3))
    final = nxt.convert(NativeChunk(stop=True, stop_type="limit", tokens_predicted=8))
    assert final.done and final.choices[0].finish_reason == "length"
    # as a server reports it: this request's tokens (the assembler adds attempts up)
    assert final.usage is not None and final.usage.completion_tokens == 8


def test_budget_counts_tokens_the_server_reported_not_chunks() -> None:
    p = planner()
    plan = p.initial()
    assert plan.convert is not None
    plan.convert(chunk("日本", [5, 6, 7, 8, 9, 10], 6))  # one chunk, six tokens
    nxt = p.next(Progress(text="日本", tokens=1))
    assert isinstance(nxt, AttemptPlan)
    assert json.loads(nxt.body)["n_predict"] == 4
    plan2 = nxt
    assert plan2.convert is not None
    plan2.convert(chunk("wxyz", [1, 2, 3, 4], 4))
    assert p.next(Progress(text="日本wxyz", tokens=2)) == Finished("length")


def test_nothing_started_is_a_plain_retry_of_the_first_request() -> None:
    p = planner()
    again = p.next(Progress())
    assert isinstance(again, AttemptPlan)
    assert again.body == p.initial().body


@pytest.mark.parametrize(
    "field", [{"echo": True}, {"suffix": "x"}, {"logprobs": 2}], ids=["echo", "suffix", "logprobs"]
)
def test_fields_the_token_path_cannot_map_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        planner(**field)


def test_the_native_decoder_drops_progress_markers_and_raises_server_errors() -> None:
    dec = framing("llamacpp").new_decoder(NativeChunk)
    got = dec.decode_lines([b'{"content":"","stop":false}', b'{"content":"a","tokens":[1]}'])
    assert [c.content for c in got] == ["a"]
    with pytest.raises(Exception, match="boom") as err:
        dec.decode_lines([b'{"content":"b","tokens":[2]}', b'{"error":{"message":"boom"}}'])
    assert [c.content for c in err.value.chunks_before] == ["b"]  # type: ignore[attr-defined]


# --- chat templates -------------------------------------------------------------------

JINJA = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def chat(messages: list[ChatMessage], **kw: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=messages, max_tokens=10, **kw)  # type: ignore[arg-type]


def test_a_jinja_template_renders_and_a_callers_prefill_is_continued() -> None:
    t = ChatTemplate.of(JINJA)
    msgs = [ChatMessage(role="user", content="hi"), ChatMessage(role="assistant", content="Hel")]
    prompt, prefill = t.prompt(msgs)
    assert prompt == "<user>hi\n<assistant>Hel" and prefill == "Hel"
    parts = ChatTemplate.of(lambda ms: "|".join(m["content"] for m in ms))
    prompt, _ = parts.prompt([ChatMessage(role="user", content=[{"type": "text", "text": "a"}])])
    assert prompt == "a"


def test_generic_template_chat_resumes_on_completions_with_rendered_prompt_and_partial() -> None:
    p = TemplateChatPlanner(chat([ChatMessage(role="user", content="hi")]), ChatTemplate.of(JINJA))
    assert p.initial().path == "/v1/chat/completions"
    nxt = p.next(Progress(text="Hello", tokens=2))
    assert isinstance(nxt, AttemptPlan)
    body = json.loads(nxt.body)
    assert nxt.path == "/v1/completions" and body["prompt"] == "<user>hi\n<assistant>Hello"
    assert nxt.convert is not None
    from resilient_stream.formats.openai.types import CompletionChoice, CompletionChunk

    c = nxt.convert(CompletionChunk(choices=[CompletionChoice(text=" world")]))
    assert c.choices[0].delta.content == " world" and c.choices[0].delta.role is None


def test_llama_server_template_chat_is_native_from_the_first_attempt() -> None:
    p = TemplateChatPlanner(
        chat([ChatMessage(role="user", content="hi")]),
        ChatTemplate.of(JINJA),
        flavor="llama-server",
    )
    first = p.initial()
    assert first.path == "/completion"
    assert json.loads(first.body)["prompt"] == "<user>hi\n<assistant>"
    assert first.convert is not None
    c = first.convert(chunk("Hi", [4], 1))
    assert c.choices[0].delta.role == "assistant" and c.choices[0].delta.content == "Hi"


def test_tools_cannot_go_through_a_template() -> None:
    with pytest.raises(InvalidRequestError):
        TemplateChatPlanner(
            chat([ChatMessage(role="user", content="hi")], tools=[{"type": "function"}]),
            ChatTemplate.of(JINJA),
        )


# --- capabilities ---------------------------------------------------------------------


def test_classify_tells_the_servers_apart() -> None:
    llama = classify("u", props={"build_info": "b1", "chat_template": "T", "bos_token": "<s>"})
    assert (llama.server, llama.flavor, llama.token_ids) == ("llama-server", "llama-server", True)
    assert llama.chat_template == "T" and llama.bos_token == "<s>"
    assert classify("u", ollama_version={"version": "0.5.1"}).flavor == "ollama"
    models = {"data": [{"id": "x", "owned_by": "vllm"}]}
    assert classify("u", models=models).flavor == "vllm"
    lcp = classify("u", models={"data": [{"id": "x", "owned_by": "me"}]})
    assert lcp.server == "llama-cpp-python" and lcp.continues_prefill is False
    assert classify("u").server == "unknown" and classify("u").flavor == "generic"
    assert Piece("a", 1, None).ids is None


def test_a_piece_without_ids_is_replayed_from_exact_ids_and_dropped() -> None:
    p = planner()
    plan = p.initial()
    assert plan.convert is not None
    plan.convert(chunk("ab", [1], 1))
    plan.convert(chunk("日", [9], 4))  # three tokens, one id
    plan.convert(chunk("cd", [2], 5))
    nxt = p.next(Progress(text="ab日cd", tokens=3))
    assert isinstance(nxt, AttemptPlan) and nxt.convert is not None
    body = json.loads(nxt.body)
    assert body["prompt"] == ["P", 1] and body["n_predict"] == 9
    # the server regenerates "日cd" first: dropped, then what follows is handed on
    assert nxt.convert(chunk("日", [9], 3)).choices[0].text == ""
    assert nxt.convert(chunk("c", [3], 4)).choices[0].text == ""
    assert nxt.convert(chunk("dXY", [4], 5)).choices[0].text == "XY"
    assert not p.replay_failed
    final = nxt.convert(NativeChunk(stop=True, stop_type="eos", tokens_predicted=6))
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is None  # not asked for (stream_options.include_usage)


def test_a_replay_that_differs_is_handed_on_and_later_resumes_send_text() -> None:
    p = planner()
    plan = p.initial()
    assert plan.convert is not None
    plan.convert(chunk("ab", [1], 1))
    plan.convert(chunk("日", [9], 4))
    nxt = p.next(Progress(text="ab日", tokens=2))
    assert isinstance(nxt, AttemptPlan) and nxt.convert is not None
    # regenerated differently (numerics): the caller's seam check must see it
    assert nxt.convert(chunk("月", [8], 3)).choices[0].text == "月"
    assert p.replay_failed
    again = p.next(Progress(text="ab日", tokens=2))
    assert isinstance(again, AttemptPlan)
    assert json.loads(again.body)["prompt"] == ["P", 1, "日"]


def test_the_template_path_keeps_the_servers_flavor_on_both_endpoints() -> None:
    p = TemplateChatPlanner(
        chat([ChatMessage(role="user", content="hi")]),
        ChatTemplate.of(JINJA),
        flavor="llama-cpp-python",
    )
    assert p.initial().token_bound == "utf8"  # the chat attempt, counted by its rules
    nxt = p.next(Progress(text="Hello", tokens=2))
    assert isinstance(nxt, AttemptPlan) and nxt.token_bound == "utf8"
