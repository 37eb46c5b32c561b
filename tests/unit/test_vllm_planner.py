"""vLLM's token-id path, sans-I/O: the decoder of its chunks, the completion and chat
planners (what each request carries, how chunks come back, when the text path takes over)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from resilient_stream.errors import ServerReportedError, TruncatedStreamError
from resilient_stream.formats import framing
from resilient_stream.formats.openai.types import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    CompletionChunk,
    CompletionRequest,
)
from resilient_stream.formats.plan import AttemptPlan, Finished, Progress
from resilient_stream.formats.vllm.planner import VllmChatPlanner, VllmCompletionPlanner
from resilient_stream.formats.vllm.types import VllmChatChunk, VllmCompletionChunk

PROMPT_IDS = [1, 2, 3]


def sse(*events: dict[str, Any] | str) -> bytes:
    out = b""
    for e in events:
        data = e if isinstance(e, str) else json.dumps(e, separators=(",", ":"))
        out += b"data: " + data.encode() + b"\n\n"
    return out


def cchunk(text: str, ids: list[int] | None, **choice: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"index": 0, "text": text, "finish_reason": None, **choice}
    if ids is not None:
        c["token_ids"] = ids
    return {"id": "cmpl-1", "model": "m", "choices": [c]}


def read(chunk_type: type[Any], body: bytes) -> list[Any]:
    """A body through the 'vllm' framing's framer and decoder, one read per event."""
    f = framing("vllm")
    framer, decoder = f.new_framer(1 << 20), f.new_decoder(chunk_type)
    out: list[Any] = []
    for part in body.split(b"\n\n"):
        if part:
            out += decoder.decode_lines(framer.feed(part + b"\n\n"))
    return out


def body(plan: AttemptPlan) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(plan.body)
    return value


# --- decoder --------------------------------------------------------------------------


def test_a_step_inside_a_utf8_character_joins_the_chunk_that_completes_it() -> None:
    chunks = read(
        VllmCompletionChunk,
        sse(
            cchunk("a", [97], prompt_token_ids=PROMPT_IDS),
            cchunk("", [0xC3]),
            cchunk("é", [0xA9]),
            cchunk("b", [98], finish_reason="length"),
            {"id": "cmpl-1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
            "[DONE]",
        ),
    )
    assert [(c.choices[0].text, c.ids(), c.done) for c in chunks] == [
        ("a", [97], False),
        ("é", [0xC3, 0xA9], False),
        ("b", [98], False),  # the finish chunk's text goes on, its finish on the final
        ("", None, True),
    ]
    assert chunks[0].prompt_ids() == PROMPT_IDS
    final = chunks[-1]
    assert final.choices[0].finish_reason == "length" and final.usage.completion_tokens == 4
    assert final.id == "cmpl-1" and final.model == "m"


def test_chat_role_and_prompt_ids_fold_into_the_first_chunk_with_text() -> None:
    role = {
        "id": "chatcmpl-1",
        "prompt_token_ids": PROMPT_IDS,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
    }
    text = {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "token_ids": [5]}],
    }
    end = {
        "id": "chatcmpl-1",
        "choices": [
            {"index": 0, "delta": {"content": ""}, "finish_reason": "stop", "token_ids": [9]}
        ],
    }
    chunks = read(VllmChatChunk, sse(role, text, end, "[DONE]"))
    assert len(chunks) == 2
    first, final = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == "hi"
    assert first.prompt_ids() == PROMPT_IDS and first.ids() == [5]
    assert final.done and final.choices[0].finish_reason == "stop" and final.ids() == [9]


def test_absent_ids_stay_absent_and_errors_and_truncations_raise() -> None:
    chunks = read(VllmCompletionChunk, sse(cchunk("a", None), cchunk("b", None)))
    assert [c.ids() for c in chunks] == [None, None]  # an old vLLM: not an empty list
    with pytest.raises(TruncatedStreamError):
        read(VllmCompletionChunk, sse(cchunk("a", [1]), "[DONE]"))
    f = framing("vllm")
    decoder = f.new_decoder(VllmCompletionChunk)
    with pytest.raises(ServerReportedError) as info:
        decoder.decode_lines([sse(cchunk("a", [1]))[6:-2], b'{"object":"error","message":"x"}'])
    assert [c.choices[0].text for c in info.value.chunks_before] == ["a"]
    with pytest.raises(TypeError):
        f.new_decoder(CompletionChunk)


# --- completions ----------------------------------------------------------------------


def feed(plan: AttemptPlan, *chunks: VllmCompletionChunk | VllmChatChunk) -> list[Any]:
    assert plan.convert is not None
    return [plan.convert(c) for c in chunks]


def vchunk(
    text: str, ids: list[int] | None, prompt: list[int] | None = None
) -> VllmCompletionChunk:
    raw = cchunk(text, ids, **({"prompt_token_ids": prompt} if prompt else {}))
    return msgspec.convert(raw, VllmCompletionChunk)


def test_completion_asks_for_ids_and_resumes_with_the_prompt_and_generated_ids() -> None:
    planner = VllmCompletionPlanner(CompletionRequest(model="m", prompt="P", max_tokens=10))
    first = planner.initial()
    sent = body(first)
    assert first.framing == "vllm" and first.chunk_type is VllmCompletionChunk
    assert sent["prompt"] == "P" and sent["return_token_ids"] is True and sent["stream"]
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    out = feed(first, vchunk("ab", [7], PROMPT_IDS), vchunk("é", [0xC3, 0xA9]), vchunk("c", [8]))
    assert all(isinstance(c, CompletionChunk) for c in out)
    assert [c.timings.predicted_n for c in out] == [1, 3, 4]  # exact running counts
    # the caller keeps "ab" (the rest is the seam's overlap): its ids and nothing else
    plan = planner.next(Progress(text="ab", tokens=1))
    assert isinstance(plan, AttemptPlan) and plan.path == "/v1/completions"
    resumed = body(plan)
    assert resumed["prompt"] == [*PROMPT_IDS, 7] and resumed["max_tokens"] == 9
    assert "echo" not in resumed and resumed["return_token_ids"] is True
    # a second resume carries the first one's ids and what the resumed attempt streamed
    feed(plan, vchunk("é", [0xC3, 0xA9], [*PROMPT_IDS, 7]), vchunk("c", [8]), vchunk("d", [9]))
    again = planner.next(Progress(text="abé", tokens=3))
    assert isinstance(again, AttemptPlan)
    assert body(again)["prompt"] == [*PROMPT_IDS, 7, 0xC3, 0xA9]  # the first prompt's ids stay
    assert body(again)["max_tokens"] == 10 - 3


def test_a_budget_used_up_by_the_kept_ids_finishes_without_a_request() -> None:
    planner = VllmCompletionPlanner(CompletionRequest(model="m", prompt="P", max_tokens=2))
    feed(planner.initial(), vchunk("a", [1], PROMPT_IDS), vchunk("b", [2]), vchunk("c", [3]))
    assert planner.next(Progress(text="ab", tokens=2)) == Finished("length")


def test_a_stream_without_ids_resumes_on_the_text_path_for_good() -> None:
    planner = VllmCompletionPlanner(CompletionRequest(model="m", prompt="P", max_tokens=10))
    feed(planner.initial(), vchunk("ab", None), vchunk("c", None))
    plan = planner.next(Progress(text="ab", tokens=2))
    assert isinstance(plan, AttemptPlan) and plan.framing == "sse"
    assert body(plan)["prompt"] == "Pab" and body(plan)["max_tokens"] == 8
    assert planner.fallback is not None and "token ids" in planner.fallback
    # a plain retry (nothing delivered) starts the token path afresh
    assert planner.next(Progress()).framing == "vllm" and planner.fallback is None


@pytest.mark.parametrize(
    ("stop", "extra", "by_ids"),
    [
        (["\n"], None, True),
        (["\n\n"], None, False),
        ("END", {"include_stop_str_in_output": True}, True),
    ],
)
def test_stop_strings_that_make_text_lag_the_ids_resume_by_text(
    stop: Any, extra: dict[str, Any] | None, by_ids: bool
) -> None:
    """vLLM holds back max(len(stop)) - 1 characters behind the ids (stop_buffer_length)."""
    request = CompletionRequest(model="m", prompt="P", max_tokens=10, stop=stop, extra_body=extra)
    planner = VllmCompletionPlanner(request)
    feed(planner.initial(), vchunk("ab", [7], PROMPT_IDS), vchunk("c", [8]))
    plan = planner.next(Progress(text="ab", tokens=1))
    assert isinstance(plan, AttemptPlan)
    assert body(plan)["prompt"] == ([*PROMPT_IDS, 7] if by_ids else "Pab")
    assert body(plan)["stop"] == stop


# --- chat -----------------------------------------------------------------------------


def chat_chunk(content: str, ids: list[int] | None, **kw: Any) -> VllmChatChunk:
    from resilient_stream.formats.openai.types import Delta
    from resilient_stream.formats.vllm.types import VllmChatChoice

    delta = Delta(content=content, **kw)
    return VllmChatChunk(
        id="chatcmpl-1", model="m", choices=[VllmChatChoice(delta=delta, token_ids=ids)]
    )


def chat_request(**kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="m", messages=[ChatMessage(role="user", content="hi")], max_tokens=10, **kw
    )


def test_chat_resumes_as_a_completion_of_the_rendered_ids_mapped_back_to_chat() -> None:
    planner = VllmChatPlanner(chat_request(temperature=0.0))
    first = planner.initial()
    assert first.path == "/v1/chat/completions" and body(first)["return_token_ids"] is True
    opening = chat_chunk("ab", [7], role="assistant")
    opening.prompt_token_ids = PROMPT_IDS
    out = feed(first, opening, chat_chunk("c", [8]))
    assert isinstance(out[0], ChatCompletionChunk) and out[0].choices[0].delta.role == "assistant"
    plan = planner.next(Progress(text="ab", tokens=1))
    assert isinstance(plan, AttemptPlan) and plan.path == "/v1/completions"
    sent = body(plan)
    assert sent["prompt"] == [*PROMPT_IDS, 7] and sent["max_tokens"] == 9
    assert sent["temperature"] == 0.0 and "messages" not in sent
    resumed = feed(plan, vchunk("c", [8], [*PROMPT_IDS, 7]))
    chunk = resumed[0]
    assert isinstance(chunk, ChatCompletionChunk) and chunk.id == "chatcmpl-1"
    assert chunk.choices[0].delta.role is None and chunk.choices[0].delta.content == "c"


@pytest.mark.parametrize(
    ("request_kw", "delta_kw"),
    [({}, {"reasoning_content": "hmm"}), ({"tools": [{"type": "function"}]}, {})],
)
def test_chat_with_reasoning_or_tools_resumes_by_prefill(
    request_kw: dict[str, Any], delta_kw: dict[str, Any]
) -> None:
    planner = VllmChatPlanner(chat_request(**request_kw))
    opening = chat_chunk("ab", [7], role="assistant", **delta_kw)
    opening.prompt_token_ids = PROMPT_IDS
    feed(planner.initial(), opening, chat_chunk("c", [8]))
    plan = planner.next(Progress(text="ab", tokens=1))
    assert isinstance(plan, AttemptPlan) and plan.path == "/v1/chat/completions"
    sent = body(plan)
    assert sent["continue_final_message"] is True and sent["messages"][-1]["role"] == "assistant"
