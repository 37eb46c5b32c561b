"""What every endpoint of the reference server answers with (sans-I/O).

The Ollama endpoints (``handler.py``) and the OpenAI ones (``openai_api.py``)
both build a :class:`Reply`; a streaming reply carries a :class:`LineStream`
that produces one line (NDJSON) or event (SSE) per token. The stream steps
the model, counts tokens and knows when its planned fault is due; how a line
is spelled is the job of its :class:`LineFormat`, one per wire format. The
protocol edges only move bytes and keep time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from resilient_stream.refserver import formats, model
from resilient_stream.refserver.faults import Fault
from resilient_stream.refserver.settings import ServerSettings, ServerStats

JSON = b"application/json; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"

#: What decoding a request body can raise: msgspec raises RecursionError (not a
#: DecodeError) for JSON nested about 1000 levels deep.
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def invalid_body(exc: Exception) -> str:
    """The ``error`` text of a 400 for a body that does not decode."""
    if isinstance(exc, RecursionError):
        return "invalid request body: JSON nested too deeply"
    return f"invalid request body: {exc}"


def model_not_found(name: str) -> str:
    """Ollama's 404 text for an unknown model (``/api/generate``, ``/api/chat``,
    ``/api/show`` since 0.12, and its OpenAI layer's ``error.message``)."""
    return f"model '{name}' not found"


def format_generation(
    fmt: Any,
    context: str,
    thinking: bool,
    num_predict: int | None,
    settings: ServerSettings,
    vocab: model.Vocabulary,
) -> model.TokenSource | str:
    """The generation of a request with ``format`` (a plain one if the format is empty),
    or the 400 error text of a format the server refuses."""
    try:
        spec = formats.parse_format(fmt)
    except formats.FormatError as exc:
        return str(exc)
    if spec is None:
        return model.Generation(
            context,
            thinking=thinking,
            num_predict=num_predict,
            stop_probability=model.DEFAULT_STOP_PROBABILITY
            if settings.stop_probability is None
            else settings.stop_probability,
            max_tokens=settings.max_tokens,
            vocab=vocab,
        )
    return formats.FormatGeneration(
        context,
        spec,
        thinking=thinking,
        num_predict=num_predict,
        max_tokens=settings.max_tokens,
        vocab=vocab,
    )


@dataclass(slots=True)
class Reply:
    """What to answer. Exactly one of ``body`` (whole) or ``stream`` (lines) is used."""

    status: int
    content_type: bytes
    body: bytes = b""
    stream: LineStream | None = None
    #: Fault to inject into this reply (mid-stream kinds act through ``stream``).
    fault: Fault | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Seconds to wait before answering a whole-body generation (simulated decode time).
    delay: float = 0.0
    #: A HEAD request: send the headers of ``body`` (its length) but not the body.
    head: bool = False
    #: A short whole body (``truncate`` faults): the length ``body`` was cut from. The
    #: HTTP/1.1 edge promises it and closes after ``body``; HTTP/2 sends ``body`` as is.
    promised_length: int | None = None


class LineFormat(Protocol):
    """How one wire format spells the lines of one stream (NDJSON, SSE).

    A token line is ``prefix + JSON string of the token + suffix``; ``opening``
    goes out once, just before the first token (SSE's role chunk).
    """

    content_prefix: bytes
    think_prefix: bytes
    suffix: bytes
    opening: bytes

    def final_line(self, lines: LineStream, text: str) -> bytes:
        """The last line (``done: true`` / ``finish_reason``); ``text`` is content it
        carries (``final_chunk_text``)."""
        ...

    def error_line(self, message: str) -> bytes:
        """A line that reports ``message`` as an error (the ``error_line`` fault)."""
        ...

    def counted_suffix(self, tokens: int) -> bytes:
        """The end of a token line that also says the stream's running count (b"": the
        format does not, then ``suffix`` is used)."""
        ...


class LineStream:
    """The lines of one streaming generation (sans-I/O).

    Call ``next_line()`` until ``finished``; check ``fault_due()`` after each
    token line (and once before the first) to inject the planned fault.
    Token lines are spliced from precomputed bytes (each vocabulary token
    JSON-encoded once per process), so a line costs a few concatenations.
    """

    __slots__ = (
        "_content_prefix",
        "_json",
        "_opening",
        "_suffix",
        "_think_prefix",
        "fault",
        "fault_after",
        "finished",
        "first_token_ns",
        "format",
        "gen",
        "prompt_tokens",
        "start_ns",
        "stats",
        "stream_start_ns",
        "tokens",
    )

    def __init__(
        self,
        gen: model.TokenSource,
        line_format: LineFormat,
        *,
        prompt_tokens: int,
        start_ns: int,
        stats: ServerStats,
        fault: Fault | None = None,
    ) -> None:
        self.gen = gen
        self.format = line_format
        self._json = gen.vocab.json
        self._content_prefix = line_format.content_prefix
        self._think_prefix = line_format.think_prefix
        self._suffix = line_format.suffix
        self._opening = line_format.opening
        self.prompt_tokens = prompt_tokens
        #: When the request arrived, when this stream started, when its first token went.
        self.start_ns = start_ns
        self.stream_start_ns = time.perf_counter_ns()
        self.first_token_ns = 0
        self.stats = stats
        self.fault = fault
        self.fault_after = fault.after_tokens if fault is not None else -1
        self.tokens = 0
        self.finished = False

    def fault_due(self) -> bool:
        return self.tokens == self.fault_after

    def peek_final(self) -> bool:
        """Whether the next line is the final line."""
        return self.gen.peek_done()

    def next_line(self) -> bytes:
        tok = self.gen.step()
        if tok < 0:
            self.finished = True
            return self.final_line()
        if self.tokens == 0:
            self.first_token_ns = time.perf_counter_ns()
        self.tokens += 1
        self.stats.tokens_generated += 1
        prefix = self._think_prefix if self.gen.thinking else self._content_prefix
        line = prefix + self._json[tok] + self._suffix
        return self._opening + line if self.tokens == 1 else line

    def final_line(self, text: str = "") -> bytes:
        return self.format.final_line(self, text)

    def error_line(self, message: str) -> bytes:
        return self.format.error_line(message)


class FinalTextLineStream(LineStream):
    """A :class:`LineStream` whose last content token rides in the final line
    (``final_chunk_text``). A class of its own, so that streams without the
    setting pay nothing per token for it."""

    __slots__ = ()

    def next_line(self) -> bytes:
        gen = self.gen
        tok = gen.step()
        if tok < 0:
            self.finished = True
            return self.final_line()
        first = self.tokens == 0
        if first:
            self.first_token_ns = time.perf_counter_ns()
        self.tokens += 1
        self.stats.tokens_generated += 1
        if not gen.thinking and gen.peek_done():
            self.finished = True
            line = self.final_line(gen.vocab.tokens[tok])
        else:
            prefix = self._think_prefix if gen.thinking else self._content_prefix
            line = prefix + self._json[tok] + self._suffix
        return self._opening + line if first else line


class CountingLineStream(LineStream):
    """A :class:`LineStream` whose token lines carry several tokens (``tokens_per_chunk``)
    and/or the running token count (``report_tokens``). A class of its own, so that the
    plain one-token lines pay nothing for it."""

    __slots__ = ()

    #: Set by the subclass :func:`stream_class` makes for a ``tokens_per_chunk``.
    per_chunk: int = 1

    def next_line(self) -> bytes:
        gen = self.gen
        tok = gen.step()
        if tok < 0:
            self.finished = True
            return self.final_line()
        first = self.tokens == 0
        if first:
            self.first_token_ns = time.perf_counter_ns()
        thinking = gen.thinking
        vocab = gen.vocab.tokens
        n = 1
        text = vocab[tok]
        # A line stops where a planned fault is due (it must not step over it).
        stop = self.fault_after - self.tokens if self.fault_after > self.tokens else self.per_chunk
        while n < min(self.per_chunk, stop) and not gen.peek_done():
            nxt = getattr(gen, "next_is_thinking", None)
            if (nxt() if nxt is not None else thinking) != thinking:
                break  # one phase per chunk
            text += vocab[gen.step()]
            n += 1
        self.tokens += n
        self.stats.tokens_generated += n
        prefix = self._think_prefix if thinking else self._content_prefix
        body = self._json[tok] if n == 1 else msgspec.json.encode(text)
        suffix = self.format.counted_suffix(self.tokens) or self._suffix
        line = prefix + body + suffix
        return self._opening + line if first else line


def stream_class(
    final_chunk_text: bool, tokens_per_chunk: int = 1, counts: bool = False
) -> type[LineStream]:
    """The :class:`LineStream` class for the server's settings (``counts``: the format
    writes running counts for this stream)."""
    if final_chunk_text:
        return FinalTextLineStream
    if tokens_per_chunk > 1 or counts:
        return _counting(tokens_per_chunk)
    return LineStream


def _counting(per_chunk: int) -> type[LineStream]:
    cls = _COUNTING.get(per_chunk)
    if cls is None:
        cls = _COUNTING[per_chunk] = type(
            f"CountingLineStream{per_chunk}",
            (CountingLineStream,),
            {"__slots__": (), "per_chunk": per_chunk},
        )
    return cls


_COUNTING: dict[int, type[LineStream]] = {}
