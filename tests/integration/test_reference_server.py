"""The reference server over real loopback sockets.

Stock clients (httpx over HTTP/2 and HTTP/1.1, the official ollama client)
stream from it; the continuation property is checked end to end by a plain
httpx + json client; every fault kind, REFUSED_STREAM, flow control, client
cancellation and TLS+ALPN are pinned down, the HTTP/2 ones with a raw h2
client so that the frames themselves are visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import ollama
import pytest
from h2.errors import ErrorCodes

from resilient_stream.pytest_plugin import reference_server  # noqa: F401
from resilient_stream.refserver import Fault, FaultSchedule, ReferenceServer

pytestmark = pytest.mark.timeout(30)


def h2_client(**kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(http2=True, http1=False, timeout=10, **kw)


def h1_client(**kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=10, **kw)


async def ndjson(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], httpx.Response]:
    """POST and parse the NDJSON body with a plain json decoder (independent of our codec)."""
    async with client.stream("POST", url, json=body) as r:
        raw = await r.aread()
    lines = [json.loads(line) for line in raw.split(b"\n") if line]
    return lines, r


def gen_text(lines: list[dict[str, Any]]) -> str:
    return "".join(c.get("response", "") for c in lines)


def chat_parts(lines: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """(token, is_thinking) per token line of a chat stream."""
    out = []
    for c in lines:
        if not c["done"]:
            m = c["message"]
            out.append((m["thinking"], True) if m.get("thinking") else (m["content"], False))
    return out


async def wait_for(cond: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# --- a raw HTTP/2 client, to see frames ---------------------------------------------------


@dataclass
class RawStream:
    data: bytearray = field(default_factory=bytearray)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None
    frames: int = 0  # DATA frames received


class RawH2:
    """Prior-knowledge h2 client over asyncio streams, driven by the test (no tasks)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, RawStream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.remote_settings = False
        self.auto_ack = True

    @classmethod
    async def connect(cls, port: int, window: int | None = None, wait: bool = True) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self = cls(reader, writer)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        if wait:
            await self.until(lambda: self.remote_settings)
        return self

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def request(self, path: str, body: dict[str, Any]) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        payload = json.dumps(body).encode()
        headers = [
            (b":method", b"POST"),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/json"),
        ]
        self.conn.send_headers(sid, headers)
        self.conn.send_data(sid, payload, end_stream=True)
        self.streams[sid] = RawStream()
        self.flush()
        return sid

    def lines(self, sid: int) -> list[bytes]:
        return [x for x in bytes(self.streams[sid].data).split(b"\n") if x]

    async def pump(self, limit: float) -> None:
        data = await asyncio.wait_for(self.reader.read(65536), limit)
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                self.remote_settings = True
            elif isinstance(ev, h2.events.ResponseReceived):
                self.streams[ev.stream_id].headers = dict(ev.headers or [])
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id].data += ev.data or b""
                self.streams[ev.stream_id].frames += 1
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.streams[ev.stream_id].ended = True
            elif isinstance(ev, h2.events.StreamReset):
                self.streams[ev.stream_id].reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        self.flush()

    async def until(self, cond: Callable[[], bool], limit: float = 5.0) -> None:
        deadline = time.monotonic() + limit
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError("condition not reached" + (" (closed)" if self.closed else ""))
            try:
                await self.pump(left)
            except TimeoutError:
                continue

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


GEN = {"model": "m", "prompt": "tell me a story"}


def gen_body(**kw: Any) -> dict[str, Any]:
    return {**GEN, **kw}


# --- stock clients ---------------------------------------------------------------------------


async def test_httpx_http2_and_http1_stream_the_same_ndjson() -> None:
    async with ReferenceServer() as srv:
        async with h2_client() as c2, h1_client() as c1:
            lines2, r2 = await ndjson(c2, srv.url + "/api/generate", GEN)
            lines1, r1 = await ndjson(c1, srv.url + "/api/generate", GEN)
        assert r2.http_version == "HTTP/2" and r1.http_version == "HTTP/1.1"
        assert r2.headers["content-type"] == r1.headers["content-type"] == "application/x-ndjson"
        assert gen_text(lines2) == gen_text(lines1) != ""
        assert lines2[-1]["done"] is True and lines2[-1]["done_reason"] == "stop"
        assert all(not c["done"] for c in lines2[:-1])
        assert srv.stats.streams_completed == 2 and srv.stats.streams_active == 0


async def test_ollama_client_parses_generate_and_chat_streams() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv, h2_client() as plain:
        client = ollama.AsyncClient(host=srv.url)
        parts = [
            p
            async for p in await client.generate(
                model="m", prompt="hi", stream=True, options={"num_predict": 12}
            )
        ]
        assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].eval_count == 12
        expected, _ = await ndjson(
            plain, srv.url + "/api/generate", gen_body(prompt="hi", options={"num_predict": 12})
        )
        assert "".join(p.response or "" for p in parts) == gen_text(expected)

        msgs = [{"role": "user", "content": "hi"}]
        chat = [
            p
            async for p in await client.chat(
                model="m", messages=msgs, stream=True, think=True, options={"num_predict": 40}
            )
        ]
        assert chat[-1].done and chat[-1].message.role == "assistant"
        assert "".join(p.message.thinking or "" for p in chat)
        whole = await client.chat(model="m", messages=msgs, think=True, options={"num_predict": 40})
        assert whole.message.content == "".join(p.message.content or "" for p in chat)
        assert whole.message.thinking == "".join(p.message.thinking or "" for p in chat)
        listed = await client.list()
        assert listed.models[0].model == "reference:latest"
        with pytest.raises(ollama.ResponseError) as err:
            await client.generate(model="missing-thing", prompt="x")
        assert err.value.status_code == 404 and "not found" in err.value.error


# --- continuation, checked by an independent client -----------------------------------------


async def test_raw_generate_resumed_at_any_cut_streams_the_rest() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv, h2_client() as c:
        url = srv.url + "/api/generate"
        n = 60
        # find a prompt whose output has multi-byte (CJK/emoji) tokens
        for i in range(100):
            prompt = f"raw prompt {i}"
            full, _ = await ndjson(
                c, url, {**GEN, "prompt": prompt, "raw": True, "options": {"num_predict": n}}
            )
            toks = [x["response"] for x in full[:-1]]
            mb = [k + 1 for k, t in enumerate(toks) if not t.isascii()]
            if len(mb) >= 2:
                break
        else:
            raise AssertionError("no multi-byte tokens")
        assert any(
            len(t.encode()) == 4 or "\u200d" in t or "\u4e00" <= t[0] <= "\u9fff" for t in toks
        )
        cuts = sorted({0, 1, n // 2, n - 1, n, *mb})

        async def resume(k: int) -> tuple[int, list[dict[str, Any]]]:
            body = {
                **GEN,
                "prompt": prompt + "".join(toks[:k]),
                "raw": True,
                "options": {"num_predict": n - k},
            }
            return k, (await ndjson(c, url, body))[0]

        for k, rest in await asyncio.gather(*(resume(k) for k in cuts)):
            assert [x["response"] for x in rest[:-1]] == toks[k:], f"cut {k}"
            assert rest[-1]["done_reason"] == "length"
            assert "".join(toks[:k]) + gen_text(rest) == gen_text(full)


async def test_non_raw_generate_equals_chat_and_resumes_through_chat_prefill() -> None:
    async with ReferenceServer() as srv, h1_client() as c:
        system, prompt = "You are terse.", "Why is the sky blue?"
        gen, _ = await ndjson(
            c, srv.url + "/api/generate", {**GEN, "prompt": prompt, "system": system}
        )
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        chat, _ = await ndjson(c, srv.url + "/api/chat", {"model": "m", "messages": msgs})
        toks = [x["response"] for x in gen[:-1]]
        assert toks == [t for t, _ in chat_parts(chat)]
        for k in sorted({1, len(toks) // 2, len(toks) - 1}):
            prefill = {"role": "assistant", "content": "".join(toks[:k])}
            rest, _ = await ndjson(
                c, srv.url + "/api/chat", {"model": "m", "messages": [*msgs, prefill]}
            )
            assert [t for t, _ in chat_parts(rest)] == toks[k:]
            assert rest[-1]["done_reason"] == "stop"


async def test_chat_prefill_with_thinking_continues_at_multibyte_cuts() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv, h2_client() as c:
        url = srv.url + "/api/chat"
        n = 80
        for i in range(100):
            msgs = [{"role": "user", "content": f"think {i}"}]
            full, _ = await ndjson(
                c,
                url,
                {"model": "m", "messages": msgs, "think": True, "options": {"num_predict": n}},
            )
            parts = chat_parts(full)
            mb = [k + 1 for k, (t, _) in enumerate(parts) if not t.isascii() and k + 1 < n]
            if any(parts[k - 1][1] for k in mb) and any(not parts[k - 1][1] for k in mb):
                break
        else:
            raise AssertionError("no prompt with multi-byte tokens in thinking and content")
        seam = [th for _, th in parts].index(False)  # thinking complete, no content yet
        for k in sorted({1, seam, *mb}):
            prefill = {
                "role": "assistant",
                "content": "".join(t for t, th in parts[:k] if not th),
                "thinking": "".join(t for t, th in parts[:k] if th),
            }
            body = {
                "model": "m",
                "messages": [*msgs, prefill],
                "think": True,
                "options": {"num_predict": n - k},
            }
            rest, _ = await ndjson(c, url, body)
            assert chat_parts(rest) == parts[k:], f"cut {k}"


async def test_num_predict_gives_length_and_eval_count() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv, h2_client() as c:
        lines, _ = await ndjson(c, srv.url + "/api/generate", gen_body(options={"num_predict": 7}))
        final = lines[-1]
        assert len(lines) == 8 and final["done_reason"] == "length" and final["eval_count"] == 7
        assert final["total_duration"] >= final["eval_duration"] >= 0
        assert final["prompt_eval_count"] > 0


async def test_line_separators_option_emits_tokens_that_break_str_splitlines() -> None:
    seps = ("\x85", "\u2028", "\u2029")
    async with ReferenceServer(line_separators=True, stop_probability=0.0) as srv, h2_client() as c:
        for i in range(100):
            body = gen_body(prompt=f"separators {i}", options={"num_predict": 40})
            lines, _ = await ndjson(c, srv.url + "/api/generate", body)  # splits on b"\n" only
            if any(x["response"] in seps for x in lines):
                break
        else:
            raise AssertionError("no separator token in 100 streams")
        assert len(lines) == 41 and lines[-1]["done"]
        async with c.stream("POST", srv.url + "/api/generate", json=body) as r:
            text_lines = [line async for line in r.aiter_lines() if line]
        assert len(text_lines) > len(lines)  # the hazard stock aiter_lines() falls into


# --- text in the final done line (final_chunk_text) --------------------------------------


def content_and_thinking(lines: list[dict[str, Any]]) -> tuple[str, str]:
    """All content and thinking of a stream, the final line's included."""
    content = thinking = ""
    for x in lines:
        part = x.get("message", x)
        content += part.get("content", part.get("response", ""))
        thinking += part.get("thinking") or ""
    return content, thinking


def line_content(x: dict[str, Any]) -> str:
    return str(x["message"]["content"] if "message" in x else x["response"])


CHAT_HI = [{"role": "user", "content": "hi"}]
FINAL_CASES = [
    ("/api/generate", {"model": "m", "prompt": "tell me a story"}),  # ends by "stop"
    ("/api/generate", {"model": "m", "prompt": "p", "raw": True, "options": {"num_predict": 9}}),
    ("/api/chat", {"model": "m", "messages": CHAT_HI}),
    ("/api/chat", {"model": "m", "messages": CHAT_HI, "think": True}),
    ("/api/generate", {"model": "m", "prompt": "p", "think": True, "options": {"num_predict": 60}}),
]


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_final_chunk_text_moves_the_last_token_into_the_done_line(http2: bool) -> None:
    async with ReferenceServer() as off, ReferenceServer(final_chunk_text=True) as on:
        async with httpx.AsyncClient(http2=http2, http1=not http2, timeout=10) as c:
            for path, body in FINAL_CASES:
                plain, _ = await ndjson(c, off.url + path, body)
                carried, _ = await ndjson(c, on.url + path, body)
                assert content_and_thinking(carried) == content_and_thinking(plain), body
                last, final = carried[-1], plain[-1]
                assert last["done"] and line_content(final) == ""
                for key in ("done_reason", "eval_count", "prompt_eval_count"):
                    assert last[key] == final[key]
                if not body.get("think") or not plain[-2].get("message", plain[-2]).get("thinking"):
                    # The last token was content: it rides in the done line.
                    assert line_content(last) == line_content(plain[-2]) != ""
                    assert [line_content(x) for x in carried[:-1]] == [
                        line_content(x) for x in plain[:-2]
                    ]
                assert all(not x["done"] for x in carried[:-1])
            # stream: false is one object either way
            whole = {**GEN, "stream": False}
            whole_on = (await c.post(on.url + "/api/generate", json=whole)).json()
            whole_off = (await c.post(off.url + "/api/generate", json=whole)).json()
            assert whole_on["response"] == whole_off["response"] != ""


async def test_final_chunk_text_carries_content_only_never_thinking() -> None:
    """An output cut by num_predict inside the thinking ends with a thinking token: that
    token keeps its own line and the done line stays empty (content only)."""
    async with ReferenceServer(final_chunk_text=True) as srv, h2_client() as c:
        for path, body in (
            ("/api/chat", {"model": "m", "messages": CHAT_HI, "think": True}),
            ("/api/generate", {"model": "m", "prompt": "hi", "think": True}),
        ):
            lines, _ = await ndjson(c, srv.url + path, {**body, "options": {"num_predict": 2}})
            parts = [x.get("message", x) for x in lines]
            assert [bool(p.get("thinking")) for p in parts] == [True, True, False]
            assert lines[-1]["done"] and lines[-1]["done_reason"] == "length"
            assert line_content(lines[-1]) == "" and "thinking" not in parts[-1]


async def test_final_chunk_text_keeps_raw_generate_continuation_consistent() -> None:
    async with ReferenceServer(final_chunk_text=True) as srv, h1_client() as c:
        url = srv.url + "/api/generate"
        for stop, opts in ((False, {"num_predict": 12}), (True, {})):
            prompt = "carried " + ("stop" if stop else "length")
            full, _ = await ndjson(c, url, {**GEN, "prompt": prompt, "raw": True, "options": opts})
            toks = [x["response"] for x in full]
            assert toks[-1] != "" and full[-1]["done_reason"] == ("stop" if stop else "length")
            n = len(toks)
            for k in range(n + 1):
                resumed = prompt + "".join(toks[:k])
                rest_opts = {} if stop else {"num_predict": n - k}
                rest, _ = await ndjson(
                    c, url, {**GEN, "prompt": resumed, "raw": True, "options": rest_opts}
                )
                assert [x["response"] for x in rest if x["response"]] == toks[k:], f"cut {k}"
                assert rest[-1]["done"] and rest[-1]["done_reason"] == full[-1]["done_reason"]
                if k < n:  # the rest's last token rides in its done line too
                    assert rest[-1]["response"] == toks[-1]
        client = ollama.AsyncClient(host=srv.url)  # the official client streams it whole
        parts = [p async for p in await client.generate(model="m", prompt="hi", stream=True)]
        whole = await client.generate(model="m", prompt="hi")
        assert parts[-1].done and parts[-1].response
        assert "".join(p.response for p in parts) == whole.response


# --- pacing --------------------------------------------------------------------------------------


async def test_tokens_per_second_and_first_token_delay_pace_the_stream() -> None:
    async with (
        ReferenceServer(tokens_per_second=100, first_token_delay=0.2, stop_probability=0.0) as srv,
        h2_client() as c,
    ):
        t0 = time.monotonic()
        async with c.stream(
            "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 20})
        ) as r:
            stamps = []
            frames = []  # one aiter_raw piece per DATA frame
            async for data in r.aiter_raw():
                stamps.append(time.monotonic() - t0)
                frames.append(data)
        # Lower bounds only: a busy machine makes pacing slower, never faster (how close
        # to the set pace the server keeps is measured in bench/bench_server.py).
        assert stamps[0] >= 0.18  # first token delay
        assert stamps[-1] - stamps[0] >= 0.15  # 19 gaps of 10 ms
        # Paced: one token per frame, and the done line follows the last token at once,
        # in the same frame.
        assert [f.count(b"\n") for f in frames] == [1] * 19 + [2]
        assert b'"done":true' in frames[-1].split(b"\n")[1]


# --- limits, flow control, cancellation -----------------------------------------------------------


async def test_streams_over_max_concurrent_streams_are_refused() -> None:
    async with ReferenceServer(
        max_concurrent_streams=2, tokens_per_second=20, stop_probability=0.0
    ) as srv:
        # Sent before the server's SETTINGS arrive: h2 itself would not let a client exceed it.
        raw = await RawH2.connect(srv.port, wait=False)
        try:
            sids = [
                raw.request("/api/generate", gen_body(options={"num_predict": 3})) for _ in range(4)
            ]
            await raw.until(
                lambda: all(raw.streams[s].ended or raw.streams[s].reset is not None for s in sids)
            )
            resets = [raw.streams[s].reset for s in sids]
            assert resets == [None, None, ErrorCodes.REFUSED_STREAM, ErrorCodes.REFUSED_STREAM]
            assert srv.stats.refused_streams == 2 and srv.stats.streams_completed == 2
            assert srv.stats.max_streams_active_seen == 2
            assert raw.goaway is None  # the connection survives
            assert raw.conn.remote_settings.max_concurrent_streams == 2
            assert raw.conn.remote_settings.max_concurrent_streams == 2
        finally:
            await raw.close()
        # a stock client queues instead of exceeding the limit: everything succeeds
        async with h2_client() as c:
            results = await asyncio.gather(
                *(
                    ndjson(c, srv.url + "/api/generate", gen_body(options={"num_predict": 2}))
                    for _ in range(5)
                )
            )
        assert all(lines[-1]["done"] for lines, _ in results)


async def test_h2_respects_the_clients_flow_control_window() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv:
        raw = await RawH2.connect(srv.port, window=1000)
        try:
            raw.auto_ack = False
            sid = raw.request("/api/generate", gen_body(options={"num_predict": 200}))
            await raw.until(lambda: len(raw.streams[sid].data) > 800)
            with pytest.raises(AssertionError):
                await raw.until(lambda: raw.streams[sid].ended, limit=0.3)
            assert len(raw.streams[sid].data) <= 1000  # never beyond the window
            raw.auto_ack = True
            raw.conn.acknowledge_received_data(len(raw.streams[sid].data), sid)
            raw.flush()
            await raw.until(lambda: raw.streams[sid].ended)
            lines = raw.lines(sid)
            assert len(lines) == 201 and json.loads(lines[-1])["done"] is True
        finally:
            await raw.close()


async def test_h2_whole_body_larger_than_the_window_waits_for_window_updates() -> None:
    async with ReferenceServer(stop_probability=0.0) as srv:
        raw = await RawH2.connect(srv.port, window=1000)
        try:
            raw.auto_ack = False
            sid = raw.request("/api/generate", gen_body(stream=False, options={"num_predict": 500}))
            await raw.until(lambda: len(raw.streams[sid].data) == 1000)
            assert not raw.streams[sid].ended
            raw.auto_ack = True
            raw.conn.acknowledge_received_data(1000, sid)
            raw.flush()
            await raw.until(lambda: raw.streams[sid].ended)
            obj = json.loads(bytes(raw.streams[sid].data))
            assert obj["done"] is True and obj["eval_count"] == 500
            assert int(raw.streams[sid].headers[b"content-length"]) == len(raw.streams[sid].data)
        finally:
            await raw.close()


async def test_client_rst_stream_stops_generation_at_once() -> None:
    async with ReferenceServer(tokens_per_second=100, stop_probability=0.0) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            sid = raw.request("/api/generate", gen_body(options={"num_predict": 10_000}))
            await raw.until(lambda: len(raw.lines(sid)) >= 3)
            raw.conn.reset_stream(sid, ErrorCodes.CANCEL)
            raw.flush()
            await wait_for(lambda: srv.stats.streams_cancelled_by_client == 1)
            generated = srv.stats.tokens_generated
            await asyncio.sleep(0.1)  # 10 more tokens would be due by now
            assert srv.stats.tokens_generated == generated
            assert srv.stats.streams_active == 0 and srv.stats.streams_completed == 0
        finally:
            await raw.close()


async def test_h1_disconnect_stops_generation() -> None:
    async with (
        ReferenceServer(tokens_per_second=100, stop_probability=0.0) as srv,
        h1_client() as c,
    ):
        async with c.stream(
            "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 10_000})
        ) as r:
            async for _line in r.aiter_lines():
                break
        await wait_for(lambda: srv.stats.streams_cancelled_by_client == 1)
        generated = srv.stats.tokens_generated
        await asyncio.sleep(0.1)
        assert srv.stats.tokens_generated == generated and srv.stats.streams_active == 0


async def test_many_concurrent_paced_streams_on_one_connection() -> None:
    async with ReferenceServer(
        tokens_per_second=50, stop_probability=0.0, max_concurrent_streams=300
    ) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            t0 = time.monotonic()
            sids = [
                raw.request(
                    "/api/generate", {**GEN, "prompt": f"p{i}", "options": {"num_predict": 10}}
                )
                for i in range(200)
            ]
            await raw.until(lambda: all(raw.streams[s].ended for s in sids), limit=10)
            elapsed = time.monotonic() - t0
            assert all(len(raw.lines(s)) == 11 for s in sids)
            assert elapsed > 0.15  # paced: 10 tokens at 50/s = 0.18 s
            assert srv.stats.max_streams_active_seen == 200  # all streams in parallel
        finally:
            await raw.close()


async def _writes_for_staggered_streams(batch_steps: bool) -> tuple[int, list[int]]:
    """Server writes for 3 paced streams on one connection, opened 20 ms apart."""
    async with ReferenceServer(
        tokens_per_second=20, stop_probability=0.0, batch_steps=batch_steps
    ) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            sids = []
            for i in range(3):
                sids.append(
                    raw.request(
                        "/api/generate", {**GEN, "prompt": f"p{i}", "options": {"num_predict": 8}}
                    )
                )
                await asyncio.sleep(0.02)
            await raw.until(lambda: all(raw.streams[s].ended for s in sids), limit=10)
            return srv.stats.writes, [len(raw.lines(s)) for s in sids]
        finally:
            await raw.close()


async def test_batch_steps_send_streams_that_started_apart_in_the_same_writes() -> None:
    """One clock for all paced streams (a batched decoder's steps): the three streams'
    tokens leave together, a write a step, where on their own clocks (20 ms apart at a
    50 ms gap) each token is a write of its own."""
    own, own_lines = await _writes_for_staggered_streams(batch_steps=False)
    batched, batched_lines = await _writes_for_staggered_streams(batch_steps=True)
    assert own_lines == batched_lines == [9, 9, 9]
    # about one write a step (measured 13; the others' tokens ride along), where on
    # their own clocks each token is a write of its own (measured 29; a loop that lags
    # by 20 ms can only merge some of them, never below the steps)
    assert batched < 2 * 8 + 3
    assert own > batched


async def test_unpaced_lines_are_coalesced_into_few_data_frames_of_whole_lines() -> None:
    """A fast stream's lines of one batch go out as one DATA frame (as a gateway in front
    of a fast model sends them), each frame ending on a line boundary."""
    async with ReferenceServer(stop_probability=0.0) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            sid = raw.request("/api/generate", {**GEN, "options": {"num_predict": 300}})
            await raw.until(lambda: raw.streams[sid].ended, limit=10)
            lines = raw.lines(sid)
            assert len(lines) == 301
            assert raw.streams[sid].frames < len(lines) // 4
            assert bytes(raw.streams[sid].data).endswith(b"\n")
        finally:
            await raw.close()


async def test_coalescing_respects_the_connection_window_shared_by_streams() -> None:
    """Held (not yet framed) lines of many streams must fit the connection window
    together: 50 fast streams (16 KiB stream windows) through the default 64 KiB
    connection window, no protocol error."""
    async with ReferenceServer(stop_probability=0.0, max_concurrent_streams=100) as srv:
        raw = await RawH2.connect(srv.port, window=16_384)
        try:
            sids = [
                raw.request(
                    "/api/generate", {**GEN, "prompt": f"w{i}", "options": {"num_predict": 50}}
                )
                for i in range(50)
            ]
            await raw.until(lambda: all(raw.streams[s].ended for s in sids), limit=15)
            assert all(len(raw.lines(s)) == 51 for s in sids)
        finally:
            await raw.close()


# --- faults ------------------------------------------------------------


def one_fault(fault: Fault) -> FaultSchedule:
    return FaultSchedule({0: fault})


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_drop_connection_after_n_lines(http2: bool) -> None:
    async with ReferenceServer(
        faults=one_fault(Fault("drop_connection", after_tokens=3)), stop_probability=0.0
    ) as srv:
        async with h2_client() if http2 else h1_client() as c:
            got: list[bytes] = []
            with pytest.raises(httpx.TransportError):
                async with c.stream(
                    "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 50})
                ) as r:
                    async for line in r.aiter_lines():
                        got.append(line.encode())
            assert len(got) == 3
            await wait_for(lambda: srv.stats.connections_open == 0)
            assert srv.stats.streams_faulted == 1
            lines, _ = await ndjson(
                c, srv.url + "/api/generate", gen_body(options={"num_predict": 5})
            )
            assert lines[-1]["done"]  # only request 0 was faulted


async def test_reset_stream_h2_sends_rst_internal_error_and_keeps_the_connection() -> None:
    async with ReferenceServer(
        faults=one_fault(Fault("reset_stream", after_tokens=2)), stop_probability=0.0
    ) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            sid = raw.request("/api/generate", gen_body(options={"num_predict": 50}))
            await raw.until(lambda: raw.streams[sid].reset is not None)
            assert raw.streams[sid].reset == ErrorCodes.INTERNAL_ERROR
            assert len(raw.lines(sid)) == 2
            sid2 = raw.request("/api/generate", gen_body(options={"num_predict": 3}))
            await raw.until(lambda: raw.streams[sid2].ended)
            assert len(raw.lines(sid2)) == 4
        finally:
            await raw.close()


async def test_reset_stream_h1_closes_the_connection() -> None:
    async with ReferenceServer(
        faults=one_fault(Fault("reset_stream", after_tokens=2)), stop_probability=0.0
    ) as srv:
        async with h1_client() as c:
            got = []
            with pytest.raises(httpx.TransportError):
                async with c.stream(
                    "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 50})
                ) as r:
                    async for line in r.aiter_lines():
                        got.append(line)
            assert len(got) == 2


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_stall_keeps_the_connection_open_then_ends_after_seconds(http2: bool) -> None:
    fault = Fault("stall", after_tokens=2, seconds=0.3)
    async with ReferenceServer(faults=one_fault(fault), stop_probability=0.0) as srv:
        async with h2_client() if http2 else h1_client() as c:
            got: list[str] = []
            t0 = time.monotonic()
            with pytest.raises(httpx.TransportError) as info:
                async with c.stream(
                    "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 50})
                ) as r:
                    async for line in r.aiter_lines():
                        got.append(line)
            assert len(got) == 2 and time.monotonic() - t0 >= 0.25
            # The server ended it (reset / close), not the client's 10 s read timeout.
            assert not isinstance(info.value, httpx.TimeoutException), info.value
            assert srv.stats.streams_faulted == 1
            assert srv.stats.streams_cancelled_by_client == 0


async def test_stall_forever_lasts_until_the_client_goes_away() -> None:
    async with ReferenceServer(
        faults=one_fault(Fault("stall", after_tokens=1)), stop_probability=0.0
    ) as srv:
        async with httpx.AsyncClient(
            http2=True, http1=False, timeout=httpx.Timeout(10, read=0.3)
        ) as c:
            with pytest.raises(httpx.ReadTimeout):
                async with c.stream(
                    "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 50})
                ) as r:
                    async for _ in r.aiter_lines():
                        pass
            assert srv.stats.streams_active == 1 and srv.stats.tokens_generated == 1
        await wait_for(lambda: srv.stats.streams_active == 0)
        assert srv.stats.streams_cancelled_by_client == 1


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
@pytest.mark.parametrize("kind", ["truncate", "truncate_line", "error_line"])
async def test_body_ending_faults(http2: bool, kind: str) -> None:
    fault = Fault(kind, after_tokens=4, message="llama runner process has terminated")  # type: ignore[arg-type]
    async with ReferenceServer(faults=one_fault(fault), stop_probability=0.0) as srv:
        async with h2_client() if http2 else h1_client() as c:
            async with c.stream(
                "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 50})
            ) as r:
                raw = await r.aread()  # the body ends cleanly
            assert r.status_code == 200
            parts = raw.split(b"\n")
            full = [json.loads(x) for x in parts[:4]]
            assert all(not c["done"] and c["response"] for c in full)
            if kind == "truncate":
                assert parts[4:] == [b""]
            elif kind == "truncate_line":
                assert len(parts) == 5 and parts[4]  # half a line, no newline
                with pytest.raises(json.JSONDecodeError):
                    json.loads(parts[4])
            else:
                assert json.loads(parts[4]) == {"error": "llama runner process has terminated"}
                assert parts[5:] == [b""]
            # the connection stays usable
            lines, _ = await ndjson(
                c, srv.url + "/api/generate", gen_body(options={"num_predict": 3})
            )
            assert lines[-1]["done"]
            assert srv.stats.streams_faulted == 1 and srv.stats.connections_opened == 1


async def test_fault_with_exactly_all_tokens_replaces_the_done_line() -> None:
    async with ReferenceServer(
        faults=one_fault(Fault("truncate", after_tokens=5)), stop_probability=0.0
    ) as srv:
        async with h2_client() as c:
            lines, _ = await ndjson(
                c, srv.url + "/api/generate", gen_body(options={"num_predict": 5})
            )
            assert len(lines) == 5 and not any(x["done"] for x in lines)
            lines, _ = await ndjson(
                c, srv.url + "/api/generate", gen_body(options={"num_predict": 4})
            )
            assert lines[-1][
                "done"
            ]  # a fault beyond the stream's end never fires (request 1 has none)


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_status_fault_answers_with_status_retry_after_and_body(http2: bool) -> None:
    plan = FaultSchedule(
        {
            0: Fault("status", status=503, retry_after=3),
            1: Fault("status", status=429, body='{"error":"slow down"}'),
        }
    )
    async with ReferenceServer(faults=plan) as srv:
        async with h2_client() if http2 else h1_client() as c:
            r = await c.post(srv.url + "/api/generate", json=GEN)
            assert r.status_code == 503 and r.headers["retry-after"] == "3" and "error" in r.json()
            r = await c.post(srv.url + "/api/chat", json={"model": "m", "messages": []})
            assert r.status_code == 429 and r.json() == {"error": "slow down"}
            assert "retry-after" not in r.headers
            r = await c.post(srv.url + "/api/generate", json=GEN)
            assert r.status_code == 200


async def test_goaway_fault_sends_goaway_with_last_stream_id_and_closes() -> None:
    async with ReferenceServer(
        faults=one_fault(Fault("goaway", after_tokens=2)), stop_probability=0.0
    ) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            sid = raw.request("/api/generate", gen_body(options={"num_predict": 50}))
            await raw.until(lambda: raw.goaway is not None)
            assert raw.goaway is not None
            assert raw.goaway.last_stream_id == sid and raw.goaway.error_code == ErrorCodes.NO_ERROR
            assert len(raw.lines(sid)) == 2
            with pytest.raises(AssertionError, match="closed"):
                await raw.until(lambda: False, limit=2)
        finally:
            await raw.close()
    plan = one_fault(
        Fault("goaway", after_tokens=0, last_stream_id=0, error_code=ErrorCodes.ENHANCE_YOUR_CALM)
    )
    async with ReferenceServer(faults=plan) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            raw.request("/api/generate", GEN)
            await raw.until(lambda: raw.goaway is not None)
            assert raw.goaway is not None
            assert (
                raw.goaway.last_stream_id == 0
                and raw.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            )
        finally:
            await raw.close()


@pytest.mark.parametrize("kind", ["goaway", "drop_connection"])
async def test_connection_fault_ends_every_stream_of_the_connection(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    plan = one_fault(Fault(kind, after_tokens=2))  # type: ignore[arg-type]
    async with ReferenceServer(faults=plan, tokens_per_second=100, stop_probability=0.0) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            sids = [
                raw.request("/api/generate", gen_body(options={"num_predict": 50}))
                for _ in range(5)
            ]
            with pytest.raises(AssertionError, match="closed"):
                await raw.until(lambda: False, limit=5)
            assert len(raw.lines(sids[0])) == 2
            assert all(not raw.streams[s].ended for s in sids)
        finally:
            await raw.close()
        await wait_for(lambda: srv.stats.streams_active == 0)
        assert srv.stats.streams_faulted == 5 and srv.stats.streams_cancelled_by_client == 0
        assert "failed" not in caplog.text


async def test_goaway_fault_on_h1_closes_the_connection() -> None:
    async with ReferenceServer(
        faults=one_fault(Fault("goaway", after_tokens=1)), stop_probability=0.0
    ) as srv:
        async with h1_client() as c:
            with pytest.raises(httpx.TransportError):
                async with c.stream(
                    "POST", srv.url + "/api/generate", json=gen_body(options={"num_predict": 50})
                ) as r:
                    await r.aread()


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_never_answer_sends_no_headers(http2: bool) -> None:
    async with ReferenceServer(faults=one_fault(Fault("never_answer"))) as srv:
        timeout = httpx.Timeout(10, read=0.3)
        async with httpx.AsyncClient(http2=http2, http1=not http2, timeout=timeout) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.post(srv.url + "/api/generate", json=GEN)
            assert srv.stats.requests == 1 and srv.stats.tokens_generated == 0


async def test_faults_on_stream_false_replies() -> None:
    plan = FaultSchedule(
        {0: Fault("error_line"), 1: Fault("drop_connection"), 2: Fault("truncate")}
    )
    async with ReferenceServer(faults=plan) as srv, h1_client() as c:
        r = await c.post(srv.url + "/api/generate", json={**GEN, "stream": False})
        assert r.status_code == 500 and "error" in r.json()
        with pytest.raises(httpx.TransportError):
            await c.post(srv.url + "/api/generate", json={**GEN, "stream": False})
        with pytest.raises(httpx.TransportError):  # short body
            await c.post(srv.url + "/api/generate", json={**GEN, "stream": False})
        r = await c.post(srv.url + "/api/generate", json={**GEN, "stream": False})
        assert r.json()["done"] is True


# --- request validation ------------------------------------------------------------


DEEP = 100_000


def deep_array() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def deep_object() -> bytes:
    return b'{"a":' * DEEP + b"1" + b"}" * DEEP


NESTED_BODIES = [
    ("/api/generate", deep_array()),
    ("/api/generate", deep_object()),
    ("/api/generate", b'{"model":"m","prompt":"x","format":' + deep_array() + b"}"),
    ("/api/chat", b'{"model":"m","messages":[],"options":' + deep_object() + b"}"),
    ("/v1/chat/completions", b'{"model":"m","messages":[],"tool_choice":' + deep_array() + b"}"),
    ("/v1/completions", b'{"model":"m","prompt":"x","extra":' + deep_object() + b"}"),
]


@pytest.mark.parametrize("with_faults", [False, True], ids=["plain", "fault-plan"])
@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_deeply_nested_json_is_a_400_and_the_connection_lives_on(
    http2: bool, with_faults: bool
) -> None:
    """msgspec raises RecursionError (not DecodeError) past ~1000 levels: that escaped
    data_received and asyncio dropped the connection. Now: a 400 in the endpoint's error
    shape, on the same connection as the next, normal request."""
    plan = FaultSchedule({}) if with_faults else None  # the plan decodes every body too
    async with ReferenceServer(stop_probability=0.0, faults=plan) as srv:
        async with httpx.AsyncClient(http2=http2, http1=not http2, timeout=30) as c:
            for path, payload in NESTED_BODIES:
                r = await c.post(
                    srv.url + path, content=payload, headers={"content-type": "application/json"}
                )
                assert r.status_code == 400, (path, r.text[:200])
                err = r.json()["error"]
                if path.startswith("/v1/"):
                    assert err["type"] == "invalid_request_error" and err["message"]
                else:
                    assert isinstance(err, str) and err.startswith("invalid request body")
            body = gen_body(options={"num_predict": 3})
            lines, _ = await ndjson(c, srv.url + "/api/generate", body)
            assert len(lines) == 4 and lines[-1]["done"]
        assert srv.stats.connections_opened == 1


async def test_request_reset_in_the_same_read_as_its_end_drops_only_that_stream() -> None:
    """A cancel storm: the client ends a request and resets it before the server has read
    either, so ``send_headers`` meets a stream h2 already closed. That StreamClosedError
    escaped data_received and asyncio dropped the whole connection; now only that request
    goes, and the next request on the same connection is answered."""
    async with ReferenceServer(stop_probability=0.0) as srv:
        raw = await RawH2.connect(srv.port)
        try:
            sids = []
            for _ in range(3):  # request + RST_STREAM(CANCEL), all in one write
                sid = raw.conn.get_next_available_stream_id()
                raw.conn.send_headers(
                    sid,
                    [
                        (b":method", b"POST"),
                        (b":path", b"/api/generate"),
                        (b":scheme", b"http"),
                        (b":authority", b"127.0.0.1"),
                        (b"content-type", b"application/json"),
                    ],
                )
                raw.conn.send_data(sid, json.dumps(gen_body()).encode(), end_stream=True)
                raw.conn.reset_stream(sid, ErrorCodes.CANCEL)
                sids.append(sid)
            raw.flush()
            sid = raw.request("/api/generate", gen_body(options={"num_predict": 3}))
            await raw.until(lambda: raw.streams[sid].ended or raw.closed)
            assert not raw.closed and raw.goaway is None
            lines = raw.lines(sid)
            assert len(lines) == 4 and json.loads(lines[-1])["done"]
        finally:
            await raw.close()
        assert srv.stats.connections_opened == 1


async def test_model_list_makes_unknown_names_a_404_like_ollamas() -> None:
    async with ReferenceServer(models=["llama3.1:8b", "qwen3"], stop_probability=0.0) as srv:
        client = ollama.AsyncClient(host=srv.url)
        opts = {"num_predict": 3}
        for name in ("llama3.1:8b", "qwen3", "qwen3:latest", "QWEN3", "library/qwen3"):
            r = await client.generate(model=name, prompt="hi", options=opts)
            assert r.done and r.eval_count == 3, name
        msgs = [{"role": "user", "content": "hi"}]
        assert (await client.chat(model="qwen3", messages=msgs, options=opts)).message.content
        show = await client.show("llama3.1:8b")
        assert show.details is not None and show.capabilities
        assert [m.model for m in (await client.list()).models] == ["llama3.1:8b", "qwen3:latest"]
        for call in (
            client.generate(model="llama3.1", prompt="hi"),  # llama3.1:latest is not listed
            client.chat(model="qwen3:8b", messages=msgs),
            client.chat(model="nope", messages=msgs, stream=True),
            client.show("nope"),
            client.generate(model="nope", prompt=""),  # a load request checks the name too
        ):
            with pytest.raises(ollama.ResponseError) as err:
                answer = await call
                if hasattr(answer, "__aiter__"):  # a stream: the error comes with it
                    async for _ in answer:
                        pass
            assert err.value.status_code == 404
            assert re.fullmatch(r"model '[^']+' not found", err.value.error), err.value.error

        async with h1_client(base_url=srv.url) as c:
            for path, body in (
                ("/v1/chat/completions", {"model": "nope", "messages": msgs}),
                ("/v1/completions", {"model": "nope", "prompt": "hi", "stream": True}),
            ):
                r = await c.post(path, json=body)
                assert r.status_code == 404
                err_obj = r.json()["error"]
                assert err_obj["message"] == "model 'nope' not found"
                assert err_obj["type"] == "not_found_error"
            r = await c.post("/v1/chat/completions", json={"model": "QWEN3", "messages": msgs})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
            listed = (await c.get("/v1/models")).json()["data"]
            assert [m["id"] for m in listed] == ["llama3.1:8b", "qwen3"]
            r = await c.post("/api/show", json={"name": "qwen3"})  # the older field name
            assert r.status_code == 200
            r = await c.post("/api/show", json={})
            assert r.status_code == 400 and r.json() == {"error": "model is required"}


async def test_without_a_model_list_any_name_is_served_but_missing_ones() -> None:
    async with ReferenceServer() as srv:
        client = ollama.AsyncClient(host=srv.url)
        assert (await client.generate(model="anything:7b", prompt="hi")).done
        assert (await client.show("anything:7b")).capabilities
        with pytest.raises(ollama.ResponseError) as err:
            await client.show("missing-model")
        assert err.value.status_code == 404 and err.value.error == "model 'missing-model' not found"
        assert [m.model for m in (await client.list()).models] == ["reference:latest"]


# --- protocols, TLS, CLI --------------------------------------------------


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "h1"])
async def test_head_sends_headers_without_a_body(http2: bool) -> None:
    async with ReferenceServer() as srv:
        async with httpx.AsyncClient(http2=http2, http1=not http2, timeout=10) as c:
            r = await c.head(srv.url + "/")
            assert r.status_code == 200 and r.content == b""
            assert r.headers["content-length"] == str(len(b"Ollama is running"))
            assert (await c.get(srv.url + "/")).text == "Ollama is running"


async def test_protocol_switches_limit_what_the_port_speaks() -> None:
    async with ReferenceServer(http2=False) as srv:
        async with h2_client() as c:
            with pytest.raises(httpx.HTTPError):
                await c.get(srv.url + "/api/version")
        async with h1_client() as c:
            assert (await c.get(srv.url + "/api/version")).status_code == 200
    async with ReferenceServer(http1=False) as srv:
        async with h1_client() as c:
            with pytest.raises(httpx.TransportError):
                await c.get(srv.url + "/api/version")
        async with h2_client() as c:
            assert (await c.get(srv.url + "/api/version")).status_code == 200


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return str(cert), str(key)


async def test_tls_with_alpn_serves_http2_and_http1(tls_cert: tuple[str, str]) -> None:
    cert, key = tls_cert
    ctx = ssl.create_default_context(cafile=cert)
    async with ReferenceServer(tls_cert=cert, tls_key=key, stop_probability=0.0) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        body = gen_body(options={"num_predict": 5})
        async with httpx.AsyncClient(http2=True, verify=ctx, timeout=10) as c2:
            lines2, r2 = await ndjson(c2, srv.url + "/api/generate", body)
        async with httpx.AsyncClient(verify=ctx, timeout=10) as c1:
            lines1, r1 = await ndjson(c1, srv.url + "/api/generate", body)
        assert r2.http_version == "HTTP/2" and r1.http_version == "HTTP/1.1"
        assert lines1 == [*lines1[:-1], lines1[-1]] and gen_text(lines1) == gen_text(lines2)
        assert len(lines2) == 6 and lines2[-1]["done"]


@contextlib.contextmanager
def _cli_serve(*flags: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``resilient-stream serve --port 0 FLAGS`` running: its URL (from the line it
    prints) and its process, killed on the way out if the test did not stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilient_stream.cli", "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert m, line
        yield m.group(1), proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cli_serve_prints_the_url_answers_and_stops_on_sigterm() -> None:
    flags = ["--tokens-per-second", "1000", "--stop-probability", "0"]
    flags += ["--models", "m,other:7b", "--models", "third", "--final-chunk-text"]
    with _cli_serve(*flags) as (url, proc), httpx.Client(timeout=10) as c:
        r = c.post(url + "/api/generate", json=gen_body(options={"num_predict": 4}))
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x["done"] for x in lines] == [False] * 3 + [True]  # 4 tokens, the last
        assert lines[-1]["response"] and lines[-1]["eval_count"] == 4  # in the done line
        tags = c.get(url + "/api/tags").json()
        assert [t["name"] for t in tags["models"]] == ["m:latest", "other:7b", "third:latest"]
        assert c.post(url + "/api/generate", json=gen_body(model="x")).status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize("running", [True, False], ids=["running-count", "no-running-count"])
def test_cli_serve_says_a_running_count_on_every_line_unless_told_not_to(running: bool) -> None:
    flags = [] if running else ["--no-running-count"]
    with _cli_serve(*flags) as (url, proc), httpx.Client(timeout=10) as c:
        r = c.post(url + "/api/generate", json=gen_body(options={"num_predict": 4}))
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert len(lines) > 1 and lines[-1]["done"] and lines[-1]["eval_count"] == len(lines) - 1
        assert [x.get("eval_count") for x in lines[:-1]] == (
            list(range(1, len(lines))) if running else [None] * (len(lines) - 1)
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize(
    "reference_server", [{"stop_probability": 0.0, "max_concurrent_streams": 7}], indirect=True
)
async def test_pytest_fixture_starts_a_configured_server(
    reference_server: ReferenceServer,  # noqa: F811
) -> None:
    srv = reference_server
    assert srv.settings.port == 0 and srv.port > 0 and srv.settings.max_concurrent_streams == 7
    async with h1_client() as c:
        lines, _ = await ndjson(c, srv.url + "/api/generate", gen_body(options={"num_predict": 3}))
    assert len(lines) == 4 and srv.stats.streams_completed == 1
