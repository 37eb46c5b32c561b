"""What an OpenAI SSE stream costs per chunk next to an Ollama NDJSON stream.

Two measurements, side by side in one run:

* codec (sans-I/O, no sockets): framer + decoder per chunk, one token event
  per read, on bodies the reference server sends (NDJSON generate vs SSE
  completions vs SSE chat);
* end to end: the reference server in another process, StreamClient streams
  in a fresh child process each (``generate`` raw vs ``openai_completion`` vs
  ``openai_chat``), client CPU microseconds per chunk.

    python bench/bench_openai_stream.py [--streams 100] [--tokens 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import asyncio, json, sys, time
url, mode, streams, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from resilient_stream import StreamClient, StreamConfig
from resilient_stream.openai import openai_chat, openai_completion

def open_stream(c, i):
    if mode == "ollama":
        return c.generate(model="m", prompt=f"s{i}", raw=True, options={"num_predict": tokens})
    if mode == "openai_completion":
        return openai_completion(c, model="m", prompt=f"s{i}", max_tokens=tokens)
    return openai_chat(c, model="m", messages=[{"role": "user", "content": f"s{i}"}],
                       max_tokens=tokens, stream_options={"include_usage": True})

async def main():
    async with StreamClient(url, config=StreamConfig.load(env={})) as c:
        async def one(i):
            n = 0
            async for _ in open_stream(c, i):
                n += 1
            return n
        return sum(await asyncio.gather(*(one(i) for i in range(streams))))

cpu0, t0 = time.process_time(), time.perf_counter()
chunks = asyncio.run(main())
cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
print(json.dumps({"chunks": chunks, "cpu": cpu, "wall": wall}))
"""

MODES = ("ollama", "openai_completion", "openai_chat")


def codec_bench(tokens: int = 20_000) -> dict[str, float]:
    """Microseconds per chunk of framer.feed + decoder.decode_lines, one event per read."""
    import msgspec

    from resilient_stream.codec import ChunkDecoder, GenerateChunk, NdjsonFramer
    from resilient_stream.formats.openai.framing import OpenAIDecoder, OpenAIFramer
    from resilient_stream.formats.openai.types import ChatCompletionChunk, CompletionChunk

    words = [msgspec.json.encode(w) for w in (" the", " 世界", " 🚀", ".", " stream")]
    nd = [
        b'{"model":"m","created_at":"2026-01-01T00:00:00.000000Z","response":'
        + words[i % 5]
        + b',"done":false}\n'
        for i in range(tokens)
    ]
    head = (
        b'data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
        b'"choices":[{"index":0,'
    )
    comp = [
        head + b'"text":' + words[i % 5] + b',"logprobs":null,"finish_reason":null}]}\n\n'
        for i in range(tokens)
    ]
    chat_head = head.replace(b"text_completion", b"chat.completion.chunk")
    chat = [
        chat_head
        + b'"delta":{"content":'
        + words[i % 5]
        + b'},"logprobs":null,"finish_reason":null}]}\n\n'
        for i in range(tokens)
    ]
    out: dict[str, float] = {}
    cases = {
        "ollama": (NdjsonFramer(), ChunkDecoder(GenerateChunk), nd),
        "openai_completion": (OpenAIFramer(), OpenAIDecoder(CompletionChunk), comp),
        "openai_chat": (OpenAIFramer(), OpenAIDecoder(ChatCompletionChunk), chat),
    }
    for name, (framer, decoder, reads) in cases.items():
        best = float("inf")
        for _ in range(3):
            n = 0
            t0 = time.perf_counter()
            for data in reads:
                n += len(decoder.decode_lines(framer.feed(data)))
            best = min(best, time.perf_counter() - t0)
            assert n == tokens, (name, n)
        out[name] = best / tokens * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    codec = codec_bench()
    server = subprocess.Popen(
        [sys.executable, "-m", "resilient_stream.cli", "serve", "--port", "0",
         "--stop-probability", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        results: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, url, mode, str(args.streams), str(args.tokens)],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[mode].append(r["cpu"] / r["chunks"] * 1e6)
        med = {m: sorted(v)[len(v) // 2] for m, v in results.items()}
        print(f"streams={args.streams} tokens={args.tokens} rounds={args.rounds}")
        print("| wire format | codec us/chunk | StreamClient CPU us/chunk | ratio to Ollama |")
        print("|---|---|---|---|")
        for m in MODES:
            print(f"| {m} | {codec[m]:.2f} | {med[m]:.1f} | {med[m] / med['ollama']:.2f} |")
    finally:
        server.terminate()
        server.wait(10)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
