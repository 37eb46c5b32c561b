"""Token-exact completions on llama-server (sans-I/O): flavor ``"llama-server"``.

The caller asks for ``/v1/completions`` and gets OpenAI completion chunks;
under the hood every attempt is llama-server's native ``/completion`` with
``return_tokens: true``, so each chunk brings the ids and the server's running
token count. A resume re-prompts with ``[prompt, *ids generated so far]``
(a mixed prompt: the caller's prompt is tokenized exactly as the first time),
so nothing is re-tokenized at the seam and, with the prompt cache on (the
server's default), the server continues from the very state it was in. Where
the stream left ids out (a multi-byte character, see ``ledger.py``) the prompt
stops before that piece and the server regenerates the rest of the kept text
from exact ids: :class:`_Replay` checks it byte for byte and drops it, so the
caller's seam check sees only the held-back overlap. If a replay ever differs,
the stream falls back to sending such pieces as text (the verified seam then
checks the result as on any server).

Counting is exact: what the server reported per chunk, so a resumed request
asks for ``max_tokens`` minus what the kept text took, and the final chunk's
``usage.completion_tokens`` is what was generated for the caller.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...errors import InvalidRequestError
from ..openai.types import CompletionChoice, CompletionChunk, CompletionRequest, Timings, Usage
from ..plan import AttemptPlan, Finished, NotResumable, Progress
from .ledger import AttemptLedger, Continuation
from .types import FINISH_REASON, NativeChunk

NATIVE_PATH = "/completion"

_encoder = msgspec.json.Encoder()

#: OpenAI request fields that llama-server's /completion reads under the same name.
_SAME_NAME = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")


class LlamaServerPlanner:
    """Plans one completion stream over llama-server's ``/completion`` (token ids)."""

    def __init__(self, request: CompletionRequest, *, path: str | None = None) -> None:
        if request.echo:
            raise InvalidRequestError("echo is not supported on the token-exact llama-server path")
        if request.suffix is not None:
            raise InvalidRequestError("suffix (infill) is not supported with flavor 'llama-server'")
        if request.logprobs is not None:
            raise InvalidRequestError(
                "logprobs are not mapped on the token-exact llama-server path; use "
                "flavor 'llamacpp' (text resume over /v1/completions) for them"
            )
        self.request = request
        self.path = path or NATIVE_PATH
        limit = request.max_tokens
        #: The most tokens the caller asked for (None: no limit).
        self.token_limit: int | None = limit if limit is not None and limit >= 0 else None
        self._usage = bool(request.stream_options and request.stream_options.include_usage)
        self._ledger = AttemptLedger()
        self._prompt_tokens: int | None = None
        #: The continuation the last resumed request carried (None: none yet).
        self.last: Continuation | None = None
        #: A replay did not reproduce the kept text: send id-less pieces as text instead.
        self.replay_failed = False

    @property
    def caller_chunk_type(self) -> type[CompletionChunk]:
        return CompletionChunk

    def initial(self) -> AttemptPlan:
        self._ledger = AttemptLedger()
        self.last = None
        return self._plan(self.request.prompt, self.token_limit, self._ledger)

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        if not progress.started:
            return self.initial()
        cont = self._ledger.continuation(progress.text, cut_back=not self.replay_failed)
        budget = None
        if self.token_limit is not None:
            budget = self.token_limit - cont.tokens
            if budget <= 0:
                return Finished("length")
        self.last = cont
        self._ledger = AttemptLedger(cont.pieces)
        replay = _Replay(cont.replay) if cont.replay else None
        return self._plan([self.request.prompt, *cont.elements], budget, self._ledger, replay)

    # --- internals ----------------------------------------------------------------

    def _plan(
        self,
        prompt: str | list[int | str],
        budget: int | None,
        ledger: AttemptLedger,
        replay: _Replay | None = None,
    ) -> AttemptPlan:
        return AttemptPlan(
            path=self.path,
            body=_encoder.encode(self._body(prompt, budget)),
            chunk_type=NativeChunk,
            convert=lambda chunk: self._convert(chunk, ledger, replay),
            framing="llamacpp",
        )

    def _body(self, prompt: str | list[int | str], budget: int | None) -> dict[str, Any]:
        req = self.request
        body: dict[str, Any] = {"model": req.model, "prompt": prompt}
        for name in _SAME_NAME:
            value = getattr(req, name)
            if value is not None:
                body[name] = value
        if req.logit_bias is not None:
            body["logit_bias"] = req.logit_bias
        if req.extra_body:
            body.update(req.extra_body)
        if budget is not None:
            body["n_predict"] = budget
        body.pop("max_tokens", None)
        body["stream"] = True
        body["return_tokens"] = True
        return body

    def _convert(
        self, chunk: NativeChunk, ledger: AttemptLedger, replay: _Replay | None
    ) -> CompletionChunk:
        """A native chunk as the caller's completion chunk; records its ids."""
        if self._prompt_tokens is None and chunk.tokens_evaluated and not ledger.carried:
            self._prompt_tokens = chunk.tokens_evaluated
        if chunk.content or chunk.tokens:
            ledger.record(chunk.content, chunk.tokens, chunk.tokens_predicted)
        text = chunk.content
        if replay is not None and not replay.done:
            text = replay.feed(text, chunk.stop, chunk.tokens_predicted)
            if replay.failed:
                self.replay_failed = True
        # Counted as a server counts (the assembler adds attempts up): this request's
        # tokens so far, less the replayed ones, which the caller already had.
        if replay is not None and not replay.done:
            count = 0
        else:
            count = max(0, chunk.tokens_predicted - (replay.tokens if replay else 0))
        timings = Timings(predicted_n=count) if chunk.tokens_predicted else None
        if not chunk.stop:
            return CompletionChunk(
                model=chunk.model, choices=[CompletionChoice(text=text)], timings=timings
            )
        finish = FINISH_REASON.get(chunk.stop_type or "", "stop")
        usage = None
        if self._usage:
            prompt = self._prompt_tokens or 0
            usage = Usage(
                prompt_tokens=prompt, completion_tokens=count, total_tokens=prompt + count
            )
        return CompletionChunk(
            model=chunk.model,
            choices=[CompletionChoice(text=text, finish_reason=finish)],
            usage=usage,
            timings=timings,
            done=True,
        )


class _Replay:
    """Kept text the server regenerates first (from exact ids): checked and dropped.

    ``feed`` returns what to hand on: "" while the text matches, then the rest after
    the replayed text. On the first difference it hands on everything held (so the
    caller's seam check sees a continuation that does not start with its overlap,
    and flags it) and sets ``failed``.
    """

    __slots__ = ("done", "expected", "failed", "held", "tokens")

    def __init__(self, expected: str) -> None:
        self.expected = expected
        self.held = ""
        self.done = False
        self.failed = False
        #: Tokens the replay took (the server's count when it completed; a chunk that
        #: also brings new text is taken as one new token).
        self.tokens = 0

    def feed(self, text: str, end: bool, predicted: int = 0) -> str:
        held = self.held + text
        if held.startswith(self.expected):
            self.done = True
            rest = held[len(self.expected) :]
            self.tokens = max(0, predicted - (1 if rest else 0))
            return rest
        if self.expected.startswith(held) and not end:
            self.held = held
            return ""
        self.done = self.failed = True
        return held
