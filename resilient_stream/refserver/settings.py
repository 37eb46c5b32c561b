"""Settings and live counters of the reference server."""

from __future__ import annotations

from dataclasses import dataclass

from resilient_stream.refserver.faults import FaultPlan


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """How the reference server behaves. Every field has a constructor keyword of
    :class:`~resilient_stream.refserver.ReferenceServer` with the same name."""

    host: str = "127.0.0.1"
    #: 0 picks a free port (always use 0 in tests).
    port: int = 0
    #: Tokens per second per stream; 0 sends as fast as flow control allows.
    tokens_per_second: float = 0.0
    #: Seconds between the response headers and the first token.
    first_token_delay: float = 0.0
    #: Each gap between tokens is scaled by ``1 + uniform(-jitter, +jitter)`` (seeded).
    jitter: float = 0.0
    #: Pace every stream on one clock, as a batched decoder does (one step makes one token
    #: of every stream in the batch): a paced token leaves at the next multiple of the
    #: gap, so streams that started apart send in the same writes. Off: each stream's
    #: gaps count from its own start.
    batch_steps: bool = False
    #: Seed of the jitter RNG, so paced runs can be replayed.
    seed: int = 0
    #: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond it get REFUSED_STREAM.
    max_concurrent_streams: int = 100
    #: Probability of stopping at each sentence end. None: the model default (0.2);
    #: 0.0: only ``num_predict`` (or ``max_tokens``) ends a stream.
    stop_probability: float | None = None
    #: Output cap when a request sets no (or a negative) ``num_predict``.
    max_tokens: int = 4096
    #: Server-side fault hook, called once per request (see ``faults.py``).
    faults: FaultPlan | None = None
    #: PEM paths; when both are set the server speaks TLS with ALPN h2/http/1.1.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Which protocols the port speaks (h2c prior knowledge and HTTP/1.1 share it).
    http2: bool = True
    http1: bool = True
    #: Add the tokens U+0085, U+2028, U+2029 to the vocabulary: legal raw in JSON strings,
    #: they break clients that split lines with ``str.splitlines`` (httpx ``aiter_lines``).
    line_separators: bool = False
    #: Put the last content token in the final ``done: true`` line (``response`` /
    #: ``message.content``; on ``/v1/*`` streams the chunk with ``finish_reason``) instead
    #: of a line of its own, as some servers do. The text is the same either way; a last
    #: token that is thinking keeps its own line (the final line carries content only).
    final_chunk_text: bool = False
    #: Tokens per streamed chunk (of one phase, thinking or content): > 1 is how llama.cpp
    #: streams multi-byte text, several tokens in one chunk. Not with ``final_chunk_text``.
    tokens_per_chunk: int = 1
    #: Put the stream's running token count on every chunk: ``eval_count`` on ``/api/*``
    #: lines (Ollama sends it only on the final line), ``usage`` on ``/v1/*`` chunks
    #: (vLLM's ``continuous_usage_stats``). So a resume asks for exactly what is left.
    #: False: like Ollama and OpenAI, counts come only at the end (``/v1/*`` still sends
    #: them per chunk when the request asks: ``stream_options.continuous_usage_stats``,
    #: or llama-server's ``timings_per_token``).
    report_tokens: bool = True
    #: On ``/v1/chat/completions``, repeat a continued assistant prefill's content in the
    #: first content delta, before the first new token, and leave it out of the counts:
    #: what llama-server does (seen on the real-model tier, see ``docs/realmodel.md``).
    echo_prefill: bool = False
    #: Version string returned by ``GET /api/version``.
    version: str = "0.12.0-reference"
    #: Model names the server has. None: any name is served (except names starting with
    #: ``missing``, a 404); a tuple: only these (``name`` and ``name:latest`` are the same
    #: model, case does not matter), others get Ollama's 404, and ``/api/tags`` and
    #: ``/v1/models`` list them.
    models: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.tokens_per_second < 0:
            raise ValueError("tokens_per_second must be >= 0")
        if self.first_token_delay < 0:
            raise ValueError("first_token_delay must be >= 0")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if self.batch_steps and self.jitter:
            raise ValueError(
                "batch_steps paces on whole steps of 1/tokens_per_second: a jittered gap "
                "would be rounded up to one or two steps (about 2/3 of the rate at "
                "jitter=0.2); use one or the other"
            )
        if self.max_concurrent_streams < 1:
            raise ValueError("max_concurrent_streams must be >= 1")
        if self.stop_probability is not None and not 0.0 <= self.stop_probability <= 1.0:
            raise ValueError("stop_probability must be in [0, 1]")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not (self.http1 or self.http2):
            raise ValueError("enable at least one of http1, http2")
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        if self.models is not None:
            if isinstance(self.models, str):
                raise ValueError("models is a sequence of names, not one string")
            names = tuple(self.models)
            if not all(isinstance(n, str) and n.strip() for n in names):
                raise ValueError("models must be non-empty names")
            object.__setattr__(self, "models", names)  # a list becomes a tuple


@dataclass(slots=True)
class ServerStats:
    """Live counters, updated in place by the server (read them any time)."""

    requests: int = 0
    connections_opened: int = 0
    connections_open: int = 0
    streams_active: int = 0
    streams_completed: int = 0
    #: Client RST_STREAM, or h1 disconnect, while a stream was being answered.
    streams_cancelled_by_client: int = 0
    #: Streams the server ended on purpose through a fault.
    streams_faulted: int = 0
    #: Total tokens generated; stops increasing as soon as a cancelled stream stops.
    tokens_generated: int = 0
    max_streams_active_seen: int = 0
    #: h2 streams answered with RST_STREAM(REFUSED_STREAM) (over max_concurrent_streams).
    refused_streams: int = 0
    #: Socket writes of stream output: one per connection per batch of lines (so streams
    #: paced on one clock, ``batch_steps``, share them).
    writes: int = 0
