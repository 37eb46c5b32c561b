"""The reference model and request handler, without sockets.

The property everything else leans on: the output is a pure function of the
context text, so re-prompting with the partial output continues it exactly
(raw generate, chat prefill with and without thinking, non-raw generate = chat).
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_stream.formats.ollama.types import ChatChunk, GenerateChunk, Message
from resilient_stream.refserver import (
    Fault,
    FaultSchedule,
    RequestInfo,
    ServerSettings,
    ServerStats,
)
from resilient_stream.refserver.formats import FormatGeneration, continuation, parse_format
from resilient_stream.refserver.handler import Handler
from resilient_stream.refserver.model import (
    LINE_SEPARATOR_VOCAB,
    SENTENCE_END_IDS,
    VOCAB,
    Generation,
    generate_messages,
    render_chat,
    run,
    tokens,
)
from resilient_stream.refserver.replies import LineStream

prompts = st.text(min_size=1, max_size=40)


def toks(context: str, **kw: object) -> list[tuple[str, bool]]:
    return tokens(Generation(context, **kw))  # type: ignore[arg-type]


def multibyte_cuts(out: list[tuple[str, bool]]) -> list[int]:
    """Cut points right after a token that is not ASCII (CJK, emoji)."""
    return [i + 1 for i, (t, _) in enumerate(out) if not t.isascii()]


def first_prompt_with_multibyte(base: str, **kw: object) -> tuple[str, list[tuple[str, bool]]]:
    for i in range(200):
        p = f"{base} {i}"
        out = toks(p, **kw)
        if multibyte_cuts(out):
            return p, out
    raise AssertionError("no output with a multi-byte token in 200 prompts")


# --- vocabulary and generation -------------------------------------------------------


def test_vocabulary_has_ascii_cjk_multi_codepoint_emoji_and_newlines() -> None:
    assert any(t.strip().isalpha() and t.isascii() for t in VOCAB)
    assert any("\u4e00" <= t[0] <= "\u9fff" for t in VOCAB)
    assert any(len(t.encode()) == 4 and len(t) == 1 for t in VOCAB)  # 4-byte emoji
    assert any("\u200d" in t for t in VOCAB)  # ZWJ sequence
    assert "\n" in VOCAB
    assert len(set(VOCAB)) == len(VOCAB)


def test_same_context_gives_same_output() -> None:
    assert toks("hello world") == toks("hello world")
    assert toks("hello world") != toks("hello world!")


def test_output_ends_with_stop_after_a_sentence_end() -> None:
    for i in range(30):
        g = Generation(f"prompt {i}", max_tokens=10_000)
        out = tokens(g)
        assert g.done_reason == "stop"
        assert out, "a fresh prompt not ending a sentence yields at least one token"
        assert VOCAB.index(out[-1][0]) in SENTENCE_END_IDS


def test_stop_probability_zero_runs_until_num_predict() -> None:
    g = Generation("x", stop_probability=0.0, num_predict=500)
    assert len(tokens(g)) == 500
    assert g.done_reason == "length"


def test_num_predict_zero_and_negative() -> None:
    g = Generation("x", num_predict=0)
    assert tokens(g) == [] and g.done_reason == "length"
    g = Generation("x", num_predict=-1, stop_probability=0.0, max_tokens=77)
    assert len(tokens(g)) == 77 and g.done_reason == "length"


def test_peek_done_does_not_change_the_output() -> None:
    plain = toks("peek test", stop_probability=0.3)
    g = Generation("peek test", stop_probability=0.3)
    out = []
    while not g.peek_done():
        assert not g.peek_done()  # idempotent
        out.append((VOCAB[g.step()], g.thinking))
    assert g.step() == -1
    assert out == plain


# --- continuation property --------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(prompt=prompts, cut=st.integers(min_value=0, max_value=400), n=st.integers(1, 120))
def test_raw_prompt_plus_prefix_continues_exactly(prompt: str, cut: int, n: int) -> None:
    g = Generation(prompt, num_predict=n)
    out = tokens(g)
    k = min(cut, len(out))
    text = "".join(t for t, _ in out)
    prefix = "".join(t for t, _ in out[:k])
    g2 = Generation(prompt + prefix, num_predict=n - k)
    rest = tokens(g2)
    assert rest == out[k:]
    assert prefix + "".join(t for t, _ in rest) == text
    assert g2.done_reason == g.done_reason or (k == len(out) and g2.done_reason == "length")


def test_raw_continuation_after_multibyte_tokens() -> None:
    prompt, out = first_prompt_with_multibyte("emoji and CJK", stop_probability=0.0, num_predict=80)
    cuts = multibyte_cuts(out)
    for k in cuts:
        prefix = "".join(t for t, _ in out[:k])
        assert not out[k - 1][0].isascii()
        assert toks(prompt + prefix, stop_probability=0.0, num_predict=80 - k) == out[k:]


def _chat_output(messages: list[Message], think: bool, n: int) -> list[tuple[str, bool]]:
    ctx, thinking = render_chat(messages, think=think)
    return toks(ctx, thinking=thinking, num_predict=n)


@settings(max_examples=100, deadline=None)
@given(prompt=prompts, cut=st.integers(0, 300), think=st.booleans(), n=st.integers(1, 150))
def test_chat_prefill_continues_content_and_thinking(
    prompt: str, cut: int, think: bool, n: int
) -> None:
    msgs = [Message(role="system", content="be brief"), Message(role="user", content=prompt)]
    out = _chat_output(msgs, think, n)
    k = min(cut, len(out))
    content = "".join(t for t, th in out[:k] if not th)
    thinking = "".join(t for t, th in out[:k] if th)
    prefill = Message(role="assistant", content=content, thinking=thinking or None)
    assert _chat_output([*msgs, prefill], think, n - k) == out[k:]


def test_thinking_comes_first_then_content() -> None:
    out = _chat_output([Message(role="user", content="think about it")], True, 300)
    flags = [th for _, th in out]
    assert flags[0] is True
    assert False in flags, "thinking ends and content follows"
    first_content = flags.index(False)
    assert all(not f for f in flags[first_content:])


def test_prefill_exactly_at_the_end_of_thinking_continues_with_content() -> None:
    msgs = [Message(role="user", content="think at the seam")]
    out = _chat_output(msgs, True, 300)
    k = [th for _, th in out].index(False)  # all thinking received, no content yet
    thinking = "".join(t for t, _ in out[:k])
    prefill = Message(role="assistant", content="", thinking=thinking)
    assert _chat_output([*msgs, prefill], True, 300 - k) == out[k:]


def test_chat_prefill_after_multibyte_tokens_with_thinking() -> None:
    msgs = [Message(role="user", content="")]
    for i in range(200):
        msgs = [Message(role="user", content=f"multibyte thinking {i}")]
        out = _chat_output(msgs, True, 120)
        cuts = [k for k in multibyte_cuts(out) if 0 < k < len(out)]
        has_think_cut = any(out[k - 1][1] for k in cuts)
        has_content_cut = any(not out[k - 1][1] for k in cuts)
        if has_think_cut and has_content_cut:
            break
    else:
        raise AssertionError("no prompt with multi-byte tokens in both phases")
    for k in cuts:
        prefill = Message(
            role="assistant",
            content="".join(t for t, th in out[:k] if not th),
            thinking="".join(t for t, th in out[:k] if th),
        )
        assert _chat_output([*msgs, prefill], True, 120 - k) == out[k:]


def test_non_raw_generate_renders_as_system_and_user_turns() -> None:
    ctx, thinking = render_chat(generate_messages("hi", "sys"), think=False)
    assert ctx == "<|system|>\nsys<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert thinking is False
    ctx2, _ = render_chat([Message(role="user", content="hi")], think=False)
    assert render_chat(generate_messages("hi", None), think=False)[0] == ctx2


def test_run_splits_content_and_thinking() -> None:
    ctx, thinking = render_chat([Message(role="user", content="q")], think=True)
    content, think_text = run(Generation(ctx, thinking=thinking, stop_probability=0.5))
    joined = "".join(t for t, _ in toks(ctx, thinking=thinking, stop_probability=0.5))
    assert think_text and joined == think_text + content


# --- handler (request -> lines) -----------------------------------------------------------


def handler(**kw: object) -> Handler:
    return Handler(ServerSettings(**kw), ServerStats())  # type: ignore[arg-type]


def drain(stream: LineStream | None) -> list[bytes]:
    assert stream is not None
    lines = []
    while not stream.finished:
        lines.append(stream.next_line())
    return lines


def body(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def test_generate_lines_decode_as_ollama_chunks_and_end_with_metrics() -> None:
    h = handler(stop_probability=0.0)
    reply = h.handle(
        "POST",
        "/api/generate",
        body({"model": "m", "prompt": "p", "options": {"num_predict": 9}}),
        "h1",
    )
    assert reply.status == 200 and reply.content_type == b"application/x-ndjson"
    lines = drain(reply.stream)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    chunks = [msgspec.json.decode(line, type=GenerateChunk) for line in lines]
    assert [c.done for c in chunks] == [False] * 9 + [True]
    final = chunks[-1]
    assert final.done_reason == "length" and final.eval_count == 9
    assert final.model == "m" and final.created_at.endswith("Z")
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(final, name), int)
    assert final.prompt_eval_count and final.prompt_eval_count > 0
    assert h.stats.tokens_generated == 9 and h.stats.requests == 1


def test_generate_non_raw_equals_chat_with_system_and_user() -> None:
    h = handler()
    gen = drain(
        h.handle(
            "POST", "/api/generate", body({"model": "m", "prompt": "why", "system": "s"}), "h2"
        ).stream
    )
    chat_body = {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "why"}],
    }
    chat = drain(h.handle("POST", "/api/chat", body(chat_body), "h2").stream)
    gtext = "".join(msgspec.json.decode(x, type=GenerateChunk).response for x in gen)
    ctext = "".join(msgspec.json.decode(x, type=ChatChunk).message.content for x in chat)
    assert gtext == ctext and gtext


def test_think_lines_carry_thinking_field() -> None:
    h = handler()
    lines = drain(
        h.handle(
            "POST",
            "/api/chat",
            body({"model": "m", "think": True, "messages": [{"role": "user", "content": "x"}]}),
            "h1",
        ).stream
    )
    chunks = [msgspec.json.decode(x, type=ChatChunk) for x in lines]
    assert chunks[0].message.thinking and chunks[0].message.content == ""
    assert chunks[-1].done and chunks[-1].message.role == "assistant"


def test_stream_false_gives_one_object_with_the_full_text() -> None:
    h = handler()
    streamed = drain(
        h.handle("POST", "/api/generate", body({"model": "m", "prompt": "p"}), "h1").stream
    )
    whole = h.handle(
        "POST", "/api/generate", body({"model": "m", "prompt": "p", "stream": False}), "h1"
    )
    assert whole.stream is None and whole.content_type.startswith(b"application/json")
    obj = msgspec.json.decode(whole.body, type=GenerateChunk)
    assert obj.done and obj.response == "".join(
        msgspec.json.decode(x, type=GenerateChunk).response for x in streamed
    )
    chat = h.handle(
        "POST",
        "/api/chat",
        body({"model": "m", "stream": False, "messages": [{"role": "user", "content": "p"}]}),
        "h1",
    )
    msg = msgspec.json.decode(chat.body)["message"]
    assert msg["role"] == "assistant" and msg["content"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "error"),
    [
        ("POST", "/api/generate", b"{not json", 400, "invalid request body"),
        ("POST", "/api/chat", b'{"model": 3}', 400, "invalid request body"),
        ("POST", "/api/generate", b'{"model": ""}', 400, "model is required"),
        (
            "POST",
            "/api/generate",
            b'{"model": "missing-model", "prompt": "x"}',
            404,
            "model 'missing-model' not found",
        ),
        ("GET", "/api/generate", b"", 405, None),
        ("GET", "/nope", b"", 404, None),
    ],
)
def test_bad_requests_get_ollama_style_errors(
    method: str, path: str, payload: bytes, status: int, error: str | None
) -> None:
    reply = handler().handle(method, path, payload, "h1")
    assert reply.status == status and reply.stream is None
    if error is not None:
        assert error in msgspec.json.decode(reply.body)["error"]


def test_tags_version_and_empty_prompt_load() -> None:
    h = handler()
    tags = msgspec.json.decode(h.handle("GET", "/api/tags", b"", "h1").body)
    assert tags["models"][0]["name"] == "reference:latest"
    assert "version" in msgspec.json.decode(h.handle("GET", "/api/version", b"", "h1").body)
    load = msgspec.json.decode(h.handle("POST", "/api/generate", b'{"model":"m"}', "h1").body)
    assert load["done"] is True and load["done_reason"] == "load"


def test_fault_plan_sees_request_info_and_status_fault_replaces_reply() -> None:
    seen: list[RequestInfo] = []

    def plan(info: RequestInfo) -> Fault | None:
        seen.append(info)
        return Fault("status", status=429, retry_after=2) if info.index == 1 else None

    h = handler(faults=plan)
    h.handle("GET", "/api/tags", b"", "h2")
    reply = h.handle("POST", "/api/chat", body({"model": "m", "messages": []}), "h1")
    assert [(i.index, i.path, i.protocol) for i in seen] == [
        (0, "/api/tags", "h2"),
        (1, "/api/chat", "h1"),
    ]
    assert seen[1].body == {"model": "m", "messages": []}
    assert reply.status == 429 and (b"retry-after", b"2") in reply.extra_headers
    assert "error" in msgspec.json.decode(reply.body)


def test_mid_stream_fault_is_due_after_n_tokens_only() -> None:
    plan = FaultSchedule({0: Fault("truncate", after_tokens=3)})
    h = handler(faults=plan, stop_probability=0.0)
    s = h.handle("POST", "/api/generate", body({"model": "m", "prompt": "p"}), "h1").stream
    assert s is not None
    due = []
    for _ in range(6):
        due.append(s.fault_due())
        s.next_line()
    assert due == [False, False, False, True, False, False]
    assert (
        handler(faults=plan)
        .handle("POST", "/api/generate", b'{"model":"m","prompt":"p"}', "h1")
        .fault
        is not None
    )
    h2 = handler(faults=plan)
    h2.handle("GET", "/", b"", "h1")
    assert h2.handle("POST", "/api/generate", b'{"model":"m","prompt":"p"}', "h1").fault is None


def test_fault_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")  # type: ignore[arg-type]


def test_line_separator_vocabulary_is_opt_in_and_keeps_continuation() -> None:
    seps = {"\x85", "\u2028", "\u2029"}
    assert not seps & set(VOCAB)
    assert seps <= set(LINE_SEPARATOR_VOCAB.tokens)
    for tok in seps:  # emitted raw in the JSON line, as Ollama does for U+0085
        assert tok.encode() in LINE_SEPARATOR_VOCAB.json[LINE_SEPARATOR_VOCAB.tokens.index(tok)]
    for i in range(300):
        out = toks(f"sep {i}", vocab=LINE_SEPARATOR_VOCAB, stop_probability=0.0, num_predict=60)
        cuts = [k + 1 for k, (t, _) in enumerate(out) if t in seps]
        if cuts:
            break
    else:
        raise AssertionError("no separator token in 300 outputs")
    for k in cuts:
        prefix = "".join(t for t, _ in out[:k])
        rest = toks(
            f"sep {i}" + prefix,
            vocab=LINE_SEPARATOR_VOCAB,
            stop_probability=0.0,
            num_predict=60 - k,
        )
        assert rest == out[k:]


# --- structured outputs (format) ----------------------------------------------------------

FORMATS = [
    "json",
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"enum": ["a", "b", 3]}},
            "n": {"type": ["integer", "null"]},
        },
        "required": ["name", "n"],
    },
    {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1},
    {"anyOf": [{"type": "boolean"}, {"type": "string"}, {"type": "number"}]},
]


def valid_json(text: str) -> bool:
    try:
        msgspec.json.decode(text.encode())
    except msgspec.DecodeError:
        return False
    return True


json_prompts = st.text(alphabet=st.sampled_from('{}[]":, ab1\n世'), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    prompt=json_prompts,
    fmt=st.sampled_from(range(len(FORMATS))),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_format_documents_continue_from_any_character_cut(
    prompt: str, fmt: int, cut: float
) -> None:
    """Even prompts full of JSON punctuation: re-prompting with ``prompt + doc[:c]`` gives
    ``doc[c:]`` (the earliest-start rule of formats.continuation)."""
    spec = parse_format(FORMATS[fmt])
    assert spec is not None
    doc = "".join(continuation(spec, prompt))
    # Valid JSON, counting what the prompt may have opened itself (a trailing '{', '"'...).
    assert any(valid_json(prompt[j:] + doc) for j in range(len(prompt), -1, -1))
    c = int(cut * len(doc))
    assert "".join(continuation(spec, prompt + doc[:c])) == doc[c:]


def test_format_generation_counts_tokens_and_stops_at_the_end_of_the_document() -> None:
    spec = parse_format(
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    )
    assert spec is not None
    whole = tokens(FormatGeneration("ctx", spec))
    assert whole[0] == ("{", False) and whole[-1] == ("}", False)
    assert msgspec.json.decode("".join(t for t, _ in whole).encode())["a"] >= 0
    cut = FormatGeneration("ctx", spec, num_predict=3)
    assert tokens(cut) == whole[:3] and cut.done_reason == "length"
    thinking = tokens(FormatGeneration("<|assistant|>\n<think>\n", spec, thinking=True))
    assert thinking[0][1] and not thinking[-1][1]  # thinks, then writes the document
    plain = toks("<|assistant|>\n<think>\n", thinking=True)
    n = sum(th for _, th in thinking)
    assert thinking[:n] == plain[:n]  # the same thinking as without a format


def test_model_list_setting_is_a_tuple_of_names_matched_like_ollama() -> None:
    assert ServerSettings(models=["a", "b:7b"]).models == ("a", "b:7b")  # type: ignore[arg-type]
    for bad in ("abc", ["ok", ""]):
        with pytest.raises(ValueError, match="models"):
            ServerSettings(models=bad)  # type: ignore[arg-type]
    h = handler(models=("Llama3", "ns/m:q4", "registry.example.com/x/y"))
    assert not h.unknown_model("llama3:latest") and not h.unknown_model("library/llama3")
    assert not h.unknown_model("registry.ollama.ai/library/LLAMA3:latest")
    assert not h.unknown_model("ns/m:q4") and h.unknown_model("m:q4") and h.unknown_model("ns/m")
    assert not h.unknown_model("registry.example.com/x/y:latest") and h.unknown_model("x/y")
    assert handler().unknown_model("missing-x") and not handler().unknown_model("x")
