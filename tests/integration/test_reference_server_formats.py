"""Structured outputs of the reference server: ``format: "json"``, JSON schemas (and the
OpenAI ``response_format``), over real loopback sockets.

The output is valid JSON (and validates against the schema, checked with pydantic),
streamed a token at a time, deterministic, and continuation-consistent: a resumed
request (raw ``prompt + partial``, or a chat prefill) continues the same document.
ollama-python's structured-outputs example runs against it through the official client.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import uuid
from typing import Any, Literal

import httpx
import ollama
import pytest
from pydantic import BaseModel, Field, TypeAdapter

from resilient_stream.refserver import ReferenceServer

pytestmark = pytest.mark.timeout(60)


# --- the schemas ------------------------------------------------------------------------


class FriendInfo(BaseModel):
    name: str
    age: int
    is_available: bool


class FriendList(BaseModel):
    friends: list[FriendInfo]


class Color(enum.StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    street: str = Field(max_length=20)
    zip: str = Field(min_length=5, max_length=5)


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=120)
    height: float = Field(gt=0, lt=3)
    color: Color
    mood: Literal["happy", "sad"]
    tags: list[str] = Field(min_length=1, max_length=4)
    nickname: str | None = None
    address: Address
    scores: dict[str, int]
    pair: tuple[int, str]
    born: datetime.datetime
    day: datetime.date
    id: uuid.UUID


class Node(BaseModel):
    value: int
    children: list[Node] = []
    parent: Node | None = None


MODELS: list[type[BaseModel]] = [FriendList, Person, Node, Address]


def gen_body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "prompt": "Describe it as JSON.", **kw}


async def ndjson(c: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = await c.post(url, json=body)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.content.split(b"\n") if line]


def content_tokens(lines: list[dict[str, Any]]) -> list[str]:
    out = []
    for x in lines:
        part = x.get("message", x)
        text = part.get("content", part.get("response", ""))
        if text:
            out.append(text)
    return out


@pytest.fixture
async def srv() -> Any:
    async with ReferenceServer() as server:
        yield server


@pytest.fixture
async def http(srv: ReferenceServer) -> Any:
    async with httpx.AsyncClient(base_url=srv.url, http2=True, http1=False, timeout=30) as c:
        yield c


# --- valid output ------------------------------------------------------------------------


async def test_format_json_streams_one_valid_json_object_token_by_token(
    http: httpx.AsyncClient,
) -> None:
    seen = set()
    for i in range(20):
        body = gen_body(prompt=f"describe thing {i}", format="json")
        lines = await ndjson(http, "/api/generate", body)
        toks = content_tokens(lines)
        doc = json.loads("".join(toks))
        assert isinstance(doc, dict) and doc
        assert len(toks) >= 5 and len(lines) == len(toks) + 1  # one token per line
        assert lines[-1]["done"] and lines[-1]["done_reason"] == "stop"
        assert lines[-1]["eval_count"] == len(toks)
        seen.add("".join(toks))
        again = content_tokens(await ndjson(http, "/api/generate", body))
        assert again == toks  # deterministic
        whole = (await http.post("/api/generate", json={**body, "stream": False})).json()
        assert whole["response"] == "".join(toks)
    assert len(seen) >= 15  # a function of the prompt, not one canned answer
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "format": "json"}
    assert isinstance(
        json.loads("".join(content_tokens(await ndjson(http, "/api/chat", chat)))), dict
    )


@pytest.mark.parametrize("schema_model", MODELS, ids=[m.__name__ for m in MODELS])
async def test_format_schema_output_validates_against_the_schema(
    http: httpx.AsyncClient, schema_model: type[BaseModel]
) -> None:
    schema = schema_model.model_json_schema()
    multibyte = False
    for i in range(25):
        msgs = [{"role": "user", "content": f"example {i}"}]
        lines = await ndjson(http, "/api/chat", {"model": "m", "messages": msgs, "format": schema})
        text = "".join(content_tokens(lines))
        schema_model.model_validate_json(text)  # raises if it does not validate
        multibyte = multibyte or not text.isascii()
        assert lines[-1]["done_reason"] == "stop"
    if schema_model is FriendList:
        assert multibyte  # string values carry CJK / emoji too


async def test_raw_json_schemas_beyond_pydantic(http: httpx.AsyncClient) -> None:
    cases: list[dict[str, Any]] = [
        {"type": ["string", "null"]},
        {"const": {"k": [1, "x"]}},
        {"type": "array", "items": {"enum": [1, "two", None, True]}, "minItems": 2},
        {"type": "integer", "exclusiveMinimum": 7, "exclusiveMaximum": 9},
        {"type": "number", "minimum": -1.5, "maximum": -1.25},
        {"type": "string", "format": "email"},
        {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
        {},
    ]
    for schema in cases:
        for i in range(8):
            lines = await ndjson(http, "/api/generate", gen_body(prompt=f"p{i}", format=schema))
            value = json.loads("".join(content_tokens(lines)))
            if "const" in schema:
                assert value == schema["const"]
            elif schema.get("type") == ["string", "null"]:
                TypeAdapter(str | None).validate_python(value)
            elif "items" in schema:
                assert len(value) >= 2 and all(v in (1, "two", None, True) for v in value)
            elif schema.get("type") == "integer":
                assert value == 8
            elif schema.get("type") == "number":
                assert isinstance(value, float) and -1.5 <= value <= -1.25
            elif schema.get("format") == "email":
                assert value.endswith("@example.com")
            elif "allOf" in schema:
                assert isinstance(value["a"], int)


@pytest.mark.parametrize(
    ("fmt", "error"),
    [
        ("xml", 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'),
        (3, 'invalid format: "3"; expected "json" or a valid JSON Schema object'),
        ({"type": "objekt"}, "invalid JSON schema in format: unknown type 'objekt'"),
        ({"$ref": "#/$defs/Nope"}, "invalid JSON schema in format: unresolved $ref"),
        ({"$ref": "https://example.com/s.json"}, "only local $ref"),
        ({"enum": []}, "enum must be a non-empty list"),
    ],
)
async def test_formats_the_server_cannot_honour_are_a_400(
    http: httpx.AsyncClient, fmt: Any, error: str
) -> None:
    for path, body in (
        ("/api/generate", gen_body(format=fmt)),
        (
            "/api/chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "format": fmt},
        ),
    ):
        r = await http.post(path, json=body)
        assert r.status_code == 400 and error in r.json()["error"], r.text


async def test_a_schema_nested_too_deeply_is_a_400_not_a_crash(
    http: httpx.AsyncClient,
) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(200):  # far below msgspec's ~1000 levels of JSON, above the schema limit
        schema = {"type": "array", "items": schema}
    r = await http.post("/api/generate", json=gen_body(format=schema))
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    ok = await http.post("/api/generate", json=gen_body(format={"type": "boolean"}))
    assert ok.status_code == 200  # the server goes on
    # Cycles through $ref end too: bare, through allOf, through many anyOf branches, and
    # an object that requires itself (cut by num_predict: it has no finite document).
    defs = "$defs"
    for schema in (
        {defs: {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"},
        {defs: {"A": {"allOf": [{"$ref": "#/$defs/A"}]}}, "$ref": "#/$defs/A"},
        {defs: {"A": {"anyOf": [{"$ref": "#/$defs/A"}] * 12}}, "$ref": "#/$defs/A"},
        {"type": "object", "properties": {"c": {"$ref": "#"}}, "required": ["c"]},
    ):
        body = gen_body(format=schema, options={"num_predict": 200})
        r = await http.post("/api/generate", json={**body, "stream": False})
        assert r.status_code == 200 and r.json()["done"], schema


# --- continuation ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", FriendList.model_json_schema()], ids=["json", "schema"])
async def test_raw_generate_with_format_resumes_at_every_token_and_character(
    http: httpx.AsyncClient, fmt: Any
) -> None:
    prompt = "Return two friends in JSON: "
    body = gen_body(prompt=prompt, raw=True, format=fmt)
    toks = content_tokens(await ndjson(http, "/api/generate", body))
    text = "".join(toks)
    n = len(toks)

    async def rest_tokens(k: int) -> list[str]:
        resumed = {**body, "prompt": prompt + "".join(toks[:k]), "options": {"num_predict": n - k}}
        return content_tokens(await ndjson(http, "/api/generate", resumed))

    for k, rest in zip(
        range(n + 1), await asyncio.gather(*(rest_tokens(k) for k in range(n + 1))), strict=True
    ):
        assert rest == toks[k:], f"token cut {k}"

    async def rest_text(c: int) -> str:
        resumed = {**body, "prompt": prompt + text[:c]}
        return "".join(content_tokens(await ndjson(http, "/api/generate", resumed)))

    cuts = range(len(text) + 1)  # inside tokens too (a resume layer may cut anywhere)
    for c, rest in zip(cuts, await asyncio.gather(*(rest_text(c) for c in cuts)), strict=True):
        assert rest == text[c:], f"character cut {c}"


async def test_num_predict_cuts_the_document_and_a_resume_completes_it(
    http: httpx.AsyncClient,
) -> None:
    prompt = "JSON please: "
    fmt = Person.model_json_schema()
    head = await ndjson(
        http,
        "/api/generate",
        gen_body(prompt=prompt, raw=True, format=fmt, options={"num_predict": 7}),
    )
    assert head[-1]["done_reason"] == "length" and len(content_tokens(head)) == 7
    partial = "".join(content_tokens(head))
    with pytest.raises(json.JSONDecodeError):
        json.loads(partial)
    tail = await ndjson(
        http, "/api/generate", gen_body(prompt=prompt + partial, raw=True, format=fmt)
    )
    whole = partial + "".join(content_tokens(tail))
    Person.model_validate_json(whole)
    once = await ndjson(http, "/api/generate", gen_body(prompt=prompt, raw=True, format=fmt))
    assert whole == "".join(content_tokens(once))


@pytest.mark.parametrize("think", [False, True], ids=["plain", "think"])
async def test_chat_prefill_continues_the_document(http: httpx.AsyncClient, think: bool) -> None:
    msgs = [{"role": "user", "content": "I have two friends. Return them as JSON."}]
    body: dict[str, Any] = {
        "model": "m",
        "messages": msgs,
        "format": FriendList.model_json_schema(),
    }
    if think:
        body["think"] = True
    lines = await ndjson(http, "/api/chat", body)
    parts = [
        (
            x["message"].get("thinking") or x["message"]["content"],
            bool(x["message"].get("thinking")),
        )
        for x in lines
        if not x["done"]
    ]
    content = "".join(t for t, th in parts if not th)
    FriendList.model_validate_json(content)
    if think:
        assert parts[0][1] and not parts[-1][1]  # thinks first, then the document
        plain = await ndjson(http, "/api/chat", {**body, "format": None})
        n_think = sum(th for _, th in parts)
        assert [x["message"].get("thinking") for x in plain[:n_think]] == [
            t for t, _ in parts[:n_think]
        ]

    async def rest(k: int) -> list[tuple[str, bool]]:
        prefill = {
            "role": "assistant",
            "content": "".join(t for t, th in parts[:k] if not th),
            "thinking": "".join(t for t, th in parts[:k] if th),
        }
        out = await ndjson(http, "/api/chat", {**body, "messages": [*msgs, prefill]})
        return [
            (
                x["message"].get("thinking") or x["message"]["content"],
                bool(x["message"].get("thinking")),
            )
            for x in out
            if not x["done"]
        ]

    cuts = range(1, len(parts))
    for k, got in zip(cuts, await asyncio.gather(*(rest(k) for k in cuts)), strict=True):
        assert got == parts[k:], f"cut {k}"


async def test_final_chunk_text_with_a_format_carries_the_closing_brace() -> None:
    async with ReferenceServer(final_chunk_text=True) as srv, httpx.AsyncClient() as c:
        lines = await ndjson(c, srv.url + "/api/generate", gen_body(format="json"))
    assert lines[-1]["done"] and lines[-1]["response"] == "}"
    json.loads("".join(content_tokens(lines)))


# --- the OpenAI endpoints -------------------------------------------------------------------


async def test_openai_response_format_json_object_and_json_schema(http: httpx.AsyncClient) -> None:
    msgs = [{"role": "user", "content": "friends?"}]
    schema = FriendList.model_json_schema()
    for rf, check in (
        ({"type": "json_object"}, lambda t: isinstance(json.loads(t), dict)),
        (
            {"type": "json_schema", "json_schema": {"name": "friends", "schema": schema}},
            lambda t: FriendList.model_validate_json(t) is not None,
        ),
    ):
        body = {"model": "m", "messages": msgs, "response_format": rf}
        whole = (await http.post("/v1/chat/completions", json=body)).json()
        text = whole["choices"][0]["message"]["content"]
        assert check(text) and whole["choices"][0]["finish_reason"] == "stop"
        streamed = await http.post("/v1/chat/completions", json={**body, "stream": True})
        deltas = [
            json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            for line in streamed.text.split("\n\n")
            if line.startswith("data: {")
        ]
        assert "".join(deltas) == text and len([d for d in deltas if d]) > 5
    plain = {"model": "m", "messages": msgs, "response_format": {"type": "text"}, "max_tokens": 3}
    assert (await http.post("/v1/chat/completions", json=plain)).status_code == 200
    bad = {"model": "m", "messages": msgs, "response_format": {"type": "yaml"}}
    r = await http.post("/v1/chat/completions", json=bad)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# --- ollama-python's structured-outputs example ---------------------------------------------


async def test_ollama_pythons_structured_outputs_example_runs_against_the_server() -> None:
    """examples/structured-outputs.py (and its async twin) of ollama-python: chat with
    ``format=FriendList.model_json_schema()``, then ``FriendList.model_validate_json`` of
    the answer. Before ``format`` was honoured the answer was prose and validation failed."""
    async with ReferenceServer(models=["llama3.1:8b"]) as srv:
        client = ollama.AsyncClient(host=srv.url)
        messages = [
            {
                "role": "user",
                "content": "I have two friends. The first is Ollama 22 years old busy saving "
                "the world, and the second is Alonso 23 years old and wants to hang out. "
                "Return a list of friends in JSON format",
            }
        ]
        response = await client.chat(
            model="llama3.1:8b",
            messages=messages,
            format=FriendList.model_json_schema(),
            options={"temperature": 0},
        )
        friends = FriendList.model_validate_json(response.message.content or "")
        assert friends.friends and all(isinstance(f.age, int) for f in friends.friends)

        streamed = ""
        async for part in await client.chat(
            model="llama3.1:8b",
            messages=messages,
            format=FriendList.model_json_schema(),
            stream=True,
        ):
            streamed += part.message.content or ""
        assert streamed == response.message.content

        gen = await client.generate(model="llama3.1:8b", prompt="a JSON object", format="json")
        assert isinstance(json.loads(gen.response), dict)
