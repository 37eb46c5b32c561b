"""Run one scenario: baseline, chaos run, and the checks that prove nothing was lost.

Every stream is compared with an unbroken run of the same request against a
fault-free reference server: byte-identical text and thinking, the token
count asked for, and afterwards no leaked tasks, file descriptors or open
streams on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..client import StreamClient
from ..config import StreamConfig
from ..formats import adapter_for
from ..openai import openai_chat, openai_completion
from ..result import StreamResult
from ..stream import ResilientStream
from .asks import Baseline, OverAsk, over_asks
from .infra import Infra
from .report import PlannedFault, Progress, Report, percentile
from .scenario import Scenario

#: Client settings for chaos runs (a scenario's ``[client]`` table overrides them).
CHAOS_CLIENT_DEFAULTS: dict[str, Any] = {
    "idle_timeout": 2.0,
    "first_token_timeout": 10.0,
    "total_timeout": 120.0,
    "max_attempts": 30,
    "backoff_initial": 0.02,
    "backoff_max": 0.5,
    "replica_readmit_after": 2.0,
}

BASELINE_CONCURRENCY = 64


def prompt_for(i: int) -> str:
    return f"chaos stream {i}: tell me about the network"


def request_for(client: StreamClient, scenario: Scenario, i: int) -> ResilientStream[Any]:
    """Stream ``i`` of a scenario: the endpoint mix round-robin, a distinct prompt each."""
    endpoint = scenario.endpoints[i % len(scenario.endpoints)]
    options = {"num_predict": scenario.num_predict, "temperature": 0}
    prompt = prompt_for(i)
    if endpoint == "generate_raw":
        return client.generate(model="ref", prompt=prompt, raw=True, options=options)
    if endpoint == "generate":
        return client.generate(model="ref", prompt=prompt, system="be brief", options=options)
    if endpoint in ("openai_chat", "openai_completion"):
        sampling: dict[str, Any] = {"max_tokens": scenario.num_predict, "temperature": 0}
        if endpoint == "openai_completion":
            return openai_completion(client, model="ref", prompt=prompt, **sampling)
        msgs = [{"role": "user", "content": prompt}]
        return openai_chat(
            client, model="ref", messages=msgs, stream_options={"include_usage": True}, **sampling
        )
    messages = [{"role": "user", "content": prompt}]
    return client.chat(
        model="ref", messages=messages, options=options, think=endpoint == "chat_think"
    )


async def baseline_answers(url: str, scenario: Scenario, n: int) -> list[Baseline]:
    """Every stream's unbroken answer, token by token (the baseline server sends one
    token per chunk)."""
    sem = asyncio.Semaphore(BASELINE_CONCURRENCY)
    async with StreamClient(url, config=StreamConfig.load(env={})) as client:

        async def one(i: int) -> Baseline:
            thinking: list[str] = []
            text: list[str] = []
            async with sem:
                async for chunk in request_for(client, scenario, i):
                    t, k = adapter_for(type(chunk)).texts(chunk)
                    if k:
                        thinking.append(k)
                    if t:
                        text.append(t)
            return Baseline(prompt=prompt_for(i), thinking=thinking, text=text)

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def open_fds() -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir("/proc/self/fd"))
    return -1


async def run_scenario(
    scenario: Scenario,
    *,
    streams: int | None = None,
    seed: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Report:
    n = scenario.streams if streams is None else streams
    seed = scenario.seed if seed is None else seed
    fds_before = open_fds()
    tasks_before = set(asyncio.all_tasks())
    infra = Infra(scenario, seed)
    baseline_url, urls = await infra.start()
    try:
        answers = await baseline_answers(baseline_url, scenario, n)
        expected = [("".join(a.text), "".join(a.thinking)) for a in answers]
        cfg = StreamConfig.load(env={}, **{**CHAOS_CLIENT_DEFAULTS, **scenario.client})
        outcomes: list[StreamResult | BaseException] = []
        progress = Progress(streams=n)
        wall0 = time.perf_counter()
        cpu0 = time.thread_time()
        async with StreamClient(urls, config=cfg, seed=seed) as client:
            handles = [request_for(client, scenario, i) for i in range(n)]

            async def run(s: ResilientStream[Any]) -> StreamResult:
                try:
                    async for _ in s:
                        progress.chunks += 1
                    return s.result
                finally:
                    progress.finished += 1

            ticker = None
            if on_progress is not None:
                ticker = asyncio.create_task(_tick(on_progress, progress, infra))
            try:
                async with asyncio.timeout(scenario.time_limit):
                    outcomes = list(
                        await asyncio.gather(*(run(s) for s in handles), return_exceptions=True)
                    )
            finally:
                if ticker is not None:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ticker
            cpu = time.thread_time() - cpu0
            wall = time.perf_counter() - wall0
            open_streams = client.open_streams
        await asyncio.sleep(0.2)  # let servers see the last closes
        server_active = infra.streams_active()
        faults = infra.faults()
        requests = infra.request_keys()
        asked_too_much = over_asks(infra.requests, answers, scenario.num_predict)
    finally:
        await infra.stop()
    await asyncio.sleep(0.05)
    leaked_tasks = [
        t for t in asyncio.all_tasks() - tasks_before if t is not asyncio.current_task()
    ]
    leaked_fds = max(0, open_fds() - fds_before)
    return _report(
        scenario,
        seed,
        expected,
        outcomes,
        handles,
        faults,
        cpu=cpu,
        wall=wall,
        chunks=progress.chunks,
        open_streams=open_streams,
        server_active=server_active,
        leaked_tasks=len(leaked_tasks),
        leaked_fds=leaked_fds,
        over_asks=asked_too_much,
        requests=requests,
    )


async def _tick(callback: Callable[[Progress], None], progress: Progress, infra: Infra) -> None:
    while True:
        progress.faults = len(infra.faults())
        callback(progress)
        await asyncio.sleep(0.25)


def _report(
    scenario: Scenario,
    seed: int,
    expected: list[tuple[str, str]],
    outcomes: list[StreamResult | BaseException],
    handles: list[ResilientStream[Any]],
    faults: list[Any],
    *,
    over_asks: list[OverAsk],
    requests: list[str],
    **measures: Any,
) -> Report:
    errors: Counter[str] = Counter()
    mismatches: list[str] = []
    completed = identical = 0
    for i, (want, got) in enumerate(zip(expected, outcomes, strict=True)):
        if isinstance(got, BaseException):
            errors[f"{type(got).__name__}"] += 1
            if len(mismatches) < 5:
                mismatches.append(f"stream {i}: {type(got).__name__}: {got}")
            continue
        completed += got.done
        same = (got.text, got.thinking) == want and got.eval_count == scenario.num_predict
        identical += same
        if not same and len(mismatches) < 5:
            mismatches.append(_describe_mismatch(i, want, got, scenario.num_predict))
    results = [h.result for h in handles]
    ttfts = sorted(r.time_to_first_token for r in results if r.time_to_first_token is not None)
    plan = sorted(f.plan_key() for f in faults)
    tokens = sum(r.eval_count for r in results)
    wall = measures["wall"]
    chunks = measures["chunks"]
    return Report(
        scenario=scenario.name,
        seed=seed,
        streams=len(expected),
        completed=completed,
        identical=identical,
        seams=sum(len(r.seams) for r in results),
        seams_verified=sum(s.verified or s.superseded for r in results for s in r.seams),
        errors=dict(errors),
        mismatches=mismatches,
        resumes=sum(r.resumes for r in results),
        retries=sum(r.retries for r in results),
        attempts=sum(r.attempts for r in results),
        faults=dict(Counter(f.kind for f in faults)),
        fault_plan_digest=hashlib.sha256(repr(plan).encode()).hexdigest()[:16],
        fault_plan=[PlannedFault(f.request, repr(f.plan_key())) for f in faults],
        requests=requests,
        tokens=tokens,
        chunks=chunks,
        wall_seconds=round(wall, 3),
        tokens_per_second=round(tokens / wall, 1) if wall else 0.0,
        ttft_p50_ms=round(percentile(ttfts, 50) * 1000, 1),
        ttft_p99_ms=round(percentile(ttfts, 99) * 1000, 1),
        client_cpu_us_per_chunk=round(measures["cpu"] / chunks * 1e6, 1) if chunks else 0.0,
        open_streams=measures["open_streams"],
        server_streams_active=measures["server_active"],
        leaked_tasks=measures["leaked_tasks"],
        leaked_fds=measures["leaked_fds"],
        over_asked=len(over_asks),
        over_ask_examples=[
            f"stream {o.stream}: {o.path} asked {o.asked} after {o.carried_tokens} carried "
            f"tokens, {o.left} left"
            for o in over_asks[:5]
        ],
    )


def _describe_mismatch(i: int, want: tuple[str, str], got: StreamResult, n: int) -> str:
    text, _ = want
    pos = next((k for k, (a, b) in enumerate(zip(text, got.text, strict=False)) if a != b), None)
    if pos is None:
        pos = min(len(text), len(got.text))
    return (
        f"stream {i}: differs at char {pos} (expected {len(text)} chars, got {len(got.text)}; "
        f"tokens {got.eval_count}/{n}; seams at {[s.offset for s in got.seams]})"
    )
