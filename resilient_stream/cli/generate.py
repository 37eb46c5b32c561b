"""``resilient-stream generate`` / ``chat``: stream an answer to the terminal, with resume.

Feels like ``ollama run``: the answer is printed as it arrives; if the
connection drops, the stream stalls or the server dies mid-answer, it is
resumed and the text simply continues. While it retries, a line per retry
wait on stderr says so (attempt, cause, wait) when stderr is a terminal;
``--verbose`` prints those lines always, adds one per resume and a one-line
summary (tokens, resumes, time). A failure is a line or two on stderr: the
error, and a hint when nothing answered at the URL.

Exit codes: 0 the answer completed, 1 the stream failed (reason on stderr),
2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import IO, Any

from ..client import StreamClient
from ..config import StreamConfig
from ..errors import ConfigError, InvalidRequestError, StreamError
from ..ollama._request import parse_host
from ..result import StreamResult
from ..stream import ResilientStream
from .progress import Progress, error_lines, events_to, isatty, one_line

EXIT_OK, EXIT_STREAM_ERROR, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    gen = subparsers.add_parser(
        "generate",
        help="stream /api/generate to the terminal, resuming on failures",
        description="Stream a completion from an Ollama-compatible server to stdout, "
        "resuming by re-prompting if the stream breaks. The prompt is the argument, or "
        "stdin when the argument is omitted or '-'.",
    )
    _common(gen)
    gen.add_argument("--raw", action="store_true", help="send the prompt without a template")
    gen.set_defaults(func=run_generate)

    chat = subparsers.add_parser(
        "chat",
        help="stream /api/chat (one user message) to the terminal, resuming on failures",
        description="Send one user message to /api/chat and stream the reply to stdout, "
        "resuming by re-prompting (assistant prefill) if the stream breaks. The message "
        "is the argument, or stdin when the argument is omitted or '-'.",
    )
    _common(chat)
    chat.set_defaults(func=run_chat)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", default=None, help="the prompt ('-' or omitted: stdin)")
    p.add_argument(
        "--host",
        default=None,
        help="server URL or HOST[:PORT] (default: $OLLAMA_HOST or http://127.0.0.1:11434)",
    )
    p.add_argument("--model", "-m", required=True, help="model name, e.g. qwen3:1.7b")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--num-predict", type=int, default=None, metavar="N", help="max tokens")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any Ollama option (value read as JSON if it parses), repeatable",
    )
    p.add_argument("--think", action="store_true", help="ask for thinking (printed to stderr)")
    p.add_argument(
        "--http1",
        action="store_true",
        help="speak HTTP/1.1 only (what a bare Ollama speaks; skips the h2c probe)",
    )
    p.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="say on stderr when it retries or resumes (also when stderr is not a "
        "terminal) and print a summary line",
    )


def run_generate(args: argparse.Namespace) -> int:
    return _main(args, chat=False)


def run_chat(args: argparse.Namespace) -> int:
    return _main(args, chat=True)


def _main(args: argparse.Namespace, *, chat: bool) -> int:
    try:
        prompt = _read_prompt(args.prompt)
        options = _options(args)
        host = _host(args.host)
    except ValueError as exc:
        print(f"resilient-stream {'chat' if chat else 'generate'}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_stream(args, host, prompt, options, chat=chat))
    except (ConfigError, InvalidRequestError) as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except StreamError as exc:  # raised outside the answer loop (opening, closing)
        for line in error_lines(exc, host):
            print(line, file=sys.stderr)
        return EXIT_STREAM_ERROR


def _host(arg: str | None) -> str:
    try:
        return parse_host(arg)
    except ValueError as exc:
        raise ValueError(f"bad --host (or $OLLAMA_HOST): {exc}") from None


def _read_prompt(arg: str | None) -> str:
    if arg is not None and arg != "-":
        return arg
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("no prompt: pass it as an argument or pipe it to stdin")
    text = sys.stdin.read()
    if not text.strip():
        raise ValueError("empty prompt on stdin")
    return text


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    for key, value in (
        ("num_predict", args.num_predict),
        ("temperature", args.temperature),
        ("seed", args.seed),
    ):
        if value is not None:
            options[key] = value
    return options


async def _stream(
    args: argparse.Namespace, host: str, prompt: str, options: dict[str, Any], *, chat: bool
) -> int:
    # Retry lines when someone is watching stderr (a terminal) or asked for them.
    progress = args.verbose or isatty(sys.stderr)
    overrides: dict[str, Any] = {"log_level": "info" if progress else "error"}
    if args.http1:
        overrides["http2"] = False
    config = StreamConfig.load(**overrides)
    printer = _Printer(sys.stdout, sys.stderr, chat=chat)
    with events_to(Progress(printer, config.max_attempts, verbose=args.verbose)):
        return await _answer(args, host, config, printer, prompt, options, chat=chat)


async def _answer(
    args: argparse.Namespace,
    host: str,
    config: StreamConfig,
    printer: _Printer,
    prompt: str,
    options: dict[str, Any],
    *,
    chat: bool,
) -> int:
    fields: dict[str, Any] = {}
    if options:
        fields["options"] = options
    if args.think:
        fields["think"] = True
    async with StreamClient(host, config=config) as client:
        stream: ResilientStream[Any]
        if chat:
            messages = [{"role": "system", "content": args.system}] if args.system else []
            messages.append({"role": "user", "content": prompt})
            stream = client.chat(model=args.model, messages=messages, **fields)
        else:
            if args.system:
                fields["system"] = args.system
            if args.raw:
                fields["raw"] = True
            stream = client.generate(model=args.model, prompt=prompt, **fields)
        try:
            async with stream:
                async for chunk in stream:
                    printer.write(chunk)
        except StreamError as exc:
            printer.end()
            if isinstance(exc, ConfigError | InvalidRequestError):
                raise
            for line in error_lines(exc, host):
                print(line, file=sys.stderr)
            if args.verbose:
                print(_summary(stream.result), file=sys.stderr)
            return EXIT_STREAM_ERROR
        except BrokenPipeError:
            return EXIT_OK  # e.g. piped into `head`
        printer.end()
        if args.verbose:
            print(_summary(stream.result), file=sys.stderr)
    return EXIT_OK


class _Printer:
    """Writes answer text to stdout and thinking to stderr, as it arrives."""

    def __init__(self, out: IO[str], err: IO[str], *, chat: bool) -> None:
        self.out = out
        self.err = err
        self.chat = chat
        self.last = "\n"
        self.thinking = False

    def write(self, chunk: Any) -> None:
        if self.chat:
            text, thinking = chunk.message.content, chunk.message.thinking
        else:
            text, thinking = chunk.response, chunk.thinking
        if thinking:
            self.err.write(thinking)
            self.err.flush()
            self.thinking = True
        if text:
            if self.thinking:
                self.err.write("\n")
                self.err.flush()
                self.thinking = False
            self.out.write(text)
            self.out.flush()
            self.last = text

    def note(self, line: str) -> None:
        """A line on stderr about the stream (not part of the answer), on a line of its
        own even when it arrives in the middle of the answer or of the thinking."""
        mid_answer = not self.last.endswith("\n") and isatty(self.out)
        self.err.write(("\n" if self.thinking or mid_answer else "") + line + "\n")
        self.err.flush()
        self.thinking = False

    def end(self) -> None:
        if self.thinking:
            self.err.write("\n")
            self.thinking = False
        if not self.last.endswith("\n"):
            self.out.write("\n")
            self.last = "\n"
        self.out.flush()


def _summary(r: StreamResult) -> str:
    total = f"{r.total_time:.2f}s" if r.total_time is not None else "-"
    ttft = f"{r.time_to_first_token:.2f}s" if r.time_to_first_token is not None else "-"
    return (
        f"tokens={r.eval_count} resumes={r.resumes} retries={r.retries} "
        f"attempts={r.attempts} time={total} ttft={ttft} done_reason={r.done_reason}"
    )
