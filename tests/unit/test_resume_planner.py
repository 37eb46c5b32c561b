"""Resume planner: the request that continues a broken stream (no sockets)."""

from __future__ import annotations

import msgspec

from resilient_stream.formats.ollama.planner import ResumePlanner, chat_to_generate
from resilient_stream.formats.ollama.types import ChatChunk, ChatRequest, GenerateRequest, Message
from resilient_stream.formats.plan import Finished, NotResumable, Progress


def body(plan: object) -> dict:  # type: ignore[type-arg]
    return msgspec.json.decode(plan.body)  # type: ignore[attr-defined,no-any-return]


def test_initial_request_is_the_original() -> None:
    req = GenerateRequest(model="m", prompt="hi", options={"num_predict": 5})
    plan = ResumePlanner(req).initial()
    assert plan.path == "/api/generate"
    assert body(plan) == {"model": "m", "prompt": "hi", "options": {"num_predict": 5}}


def test_nothing_received_restarts_with_the_original_request() -> None:
    req = ChatRequest(model="m", messages=[Message(role="user", content="q")])
    planner = ResumePlanner(req)
    assert planner.next(Progress()) == planner.initial()


def test_chat_resume_appends_assistant_prefill_with_content_and_thinking() -> None:
    req = ChatRequest(
        model="m",
        messages=[Message(role="user", content="q", images=["aW1n"])],
        tools=[{"type": "function", "function": {"name": "f"}}],
        think=True,
        options={"num_predict": 10, "temperature": 0},
    )
    plan = ResumePlanner(req).next(Progress(text="Hello", thinking="hmm", tokens=4))
    b = body(plan)
    assert plan.path == "/api/chat"  # type: ignore[union-attr]
    assert b["messages"] == [
        {"role": "user", "content": "q", "images": ["aW1n"]},
        {"role": "assistant", "content": "Hello", "thinking": "hmm"},
    ]
    assert b["options"] == {"num_predict": 6, "temperature": 0}
    assert b["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert b["think"] is True


def test_chat_resume_extends_a_callers_own_prefill() -> None:
    req = ChatRequest(
        model="m",
        messages=[Message(role="user", content="q"), Message(role="assistant", content="Sure: ")],
    )
    b = body(ResumePlanner(req).next(Progress(text="one", tokens=1)))
    assert b["messages"][-1] == {"role": "assistant", "content": "Sure: one"}
    assert len(b["messages"]) == 2


def test_raw_generate_resume_appends_partial_to_prompt() -> None:
    req = GenerateRequest(model="m", prompt="P:", raw=True, options={"num_predict": 3})
    plan = ResumePlanner(req).next(Progress(text="ab", tokens=2))
    assert plan.path == "/api/generate"  # type: ignore[union-attr]
    assert body(plan)["prompt"] == "P:ab"
    assert body(plan)["raw"] is True
    assert body(plan)["options"]["num_predict"] == 1


def test_plain_generate_resumes_through_chat_as_one_user_turn() -> None:
    req = GenerateRequest(model="m", prompt="Q", system="S", images=["aW1n"], keep_alive="5m")
    plan = ResumePlanner(req).next(Progress(text="A", tokens=1))
    assert plan.path == "/api/chat"  # type: ignore[union-attr]
    assert plan.convert is chat_to_generate  # type: ignore[union-attr]
    b = body(plan)
    assert b["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q", "images": ["aW1n"]},
        {"role": "assistant", "content": "A"},
    ]
    assert b["keep_alive"] == "5m"


def test_unlimited_num_predict_stays_unlimited() -> None:
    req = GenerateRequest(model="m", prompt="x", raw=True, options={"num_predict": -1})
    assert body(ResumePlanner(req).next(Progress(text="a", tokens=9)))["options"] == {
        "num_predict": -1
    }


def test_exhausted_token_budget_finishes_without_a_request() -> None:
    req = GenerateRequest(model="m", prompt="x", raw=True, options={"num_predict": 3})
    assert ResumePlanner(req).next(Progress(text="abc", tokens=3)) == Finished("length")


def test_generate_with_template_is_not_resumable_and_says_why() -> None:
    req = GenerateRequest(model="m", prompt="x", template="{{ .Prompt }}")
    plan = ResumePlanner(req).next(Progress(text="a", tokens=1))
    assert isinstance(plan, NotResumable)
    assert "template" in plan.reason


def test_chat_chunk_maps_back_to_generate_chunk() -> None:
    chunk = ChatChunk(
        model="m",
        message=Message(content="x", thinking="t"),
        done=True,
        done_reason="stop",
        eval_count=3,
    )
    gen = chat_to_generate(chunk)
    assert (gen.response, gen.thinking, gen.done, gen.done_reason, gen.eval_count) == (
        "x",
        "t",
        True,
        "stop",
        3,
    )
