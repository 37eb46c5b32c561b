"""Token-exact resume on vLLM (sans-I/O): flavor ``"vllm"`` with ``return_token_ids``.

Every attempt asks ``return_token_ids: true``; the stream then carries the
prompt's ids (first chunk) and each step's ids (``types.py``), which an
:class:`~resilient_stream.formats.llamacpp.ledger.AttemptLedger` keeps beside
their text. A resume re-prompts ``/v1/completions`` with ``prompt`` = the
prompt's ids + the ids of the text the caller keeps (everything delivered
minus the overlap held back at the seam; vLLM takes a list of ints as a
prompt and does not tokenize it), ``max_tokens`` = the caller's limit minus
those ids (an exact count), ``echo`` off. Nothing is re-tokenized at the seam,
so on a deterministic server the continuation is the unbroken one; the
verified seam still checks that the overlap comes back byte for byte.

* :class:`VllmCompletionPlanner`: ``/v1/completions``.
* :class:`VllmChatPlanner`: the first attempt is the caller's
  ``/v1/chat/completions`` request (plus ``return_token_ids``); its first chunk
  gives the rendered template's ids, so a resume goes to ``/v1/completions``
  with those ids + the generated ids and its chunks are mapped back to chat
  chunks (no second role, the first attempt's id and model): the caller never
  sees the switch.

Where the ids are not all there (a vLLM older than ``return_token_ids``
ignores the field; a reasoning parser that hides reasoning drops them; a
chat that streamed reasoning or tool calls, which a completion would not
parse; stop strings longer than one character, behind which vLLM's text lags
its ids: ``_refusal``), the stream falls back, for good, to the text path of flavor
``"vllm"`` (:class:`~resilient_stream.formats.openai.planner.OpenAIPlanner`:
prompt + text, or assistant prefill with ``continue_final_message``), whose
seams are verified as on any server. Counting is exact either way: ids per
chunk, or vLLM's ``continuous_usage_stats``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..llamacpp.ledger import AttemptLedger, Continuation
from ..openai.planner import COMPLETION_PATH, OpenAIPlanner
from ..openai.types import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    Delta,
    Timings,
    Usage,
    encode_request,
)
from ..plan import AttemptPlan, Finished, NotResumable, Progress
from .types import VllmChatChunk, VllmCompletionChunk

_encoder = msgspec.json.Encoder()


class _Attempt:
    """Counts of one attempt: the ids it streamed, the server's running count."""

    __slots__ = ("count", "ledger", "reported")

    def __init__(self, ledger: AttemptLedger) -> None:
        self.ledger = ledger
        self.count = 0  # ids streamed in this request
        self.reported = -1  # the server's running count (continuous usage), -1: none

    def running(self) -> int | None:
        """This request's tokens so far: the server's count, else the ids (None: neither)."""
        if self.reported >= 0:
            return self.reported
        return self.count if self.count else None


class VllmCompletionPlanner:
    """Plans one ``/v1/completions`` stream on vLLM, resumed from token ids."""

    def __init__(self, request: CompletionRequest, *, path: str | None = None) -> None:
        if request.echo:
            raise ValueError("echo has no token-exact path (openai.py sends it as text)")
        #: The text path, for a stream whose ids are incomplete (also the counted request:
        #: ``include_usage`` and ``continuous_usage_stats`` on).
        self.text_path = OpenAIPlanner(request, flavor="vllm", path=path)
        self.request: CompletionRequest = self.text_path.request
        self.path = path or COMPLETION_PATH
        self.token_limit: int | None = self.text_path.token_limit
        #: The ids vLLM rendered the prompt to (first chunk of the first attempt).
        self.prompt_ids: list[int] | None = None
        self.ledger = AttemptLedger()
        #: Why this request cannot resume by ids at all (None: it can).
        self.refusal: str | None = _refusal(request)
        #: Why the stream went to the text path (None: it did not).
        self.fallback: str | None = self.refusal
        #: The continuation the last resumed request carried (None: none yet).
        self.last: Continuation | None = None

    @property
    def caller_chunk_type(self) -> type[CompletionChunk]:
        return CompletionChunk

    def reset(self) -> None:
        self.prompt_ids = None
        self.ledger = AttemptLedger()
        self.fallback = self.refusal
        self.last = None

    def initial(self) -> AttemptPlan:
        self.reset()
        attempt = _Attempt(self.ledger)
        return self._plan(self.request.prompt, self.token_limit, attempt)

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        if not progress.started:
            return self.initial()
        plan = self.resume(progress)
        if plan is None:
            return self.text_path.next(progress)
        if isinstance(plan, Finished):
            return plan
        attempt, body = plan
        return self._attempt_plan(body, attempt)

    def resume(self, progress: Progress) -> tuple[_Attempt, bytes] | Finished | None:
        """The token-id request that continues after ``progress`` (None: the text path)."""
        if self.fallback is None:
            self.fallback = self._why_not(progress)
        if self.fallback is not None or self.prompt_ids is None:
            return None
        cont = self.ledger.continuation(progress.text)
        if not cont.exact:
            # The kept text does not end where a chunk's ids do (never on a seam the
            # assembler chose: it holds back whole chunks); text it is, from now on.
            self.fallback = "the kept text does not end on a chunk's ids"
            return None
        budget = None
        if self.token_limit is not None:
            budget = self.token_limit - cont.tokens
            if budget <= 0:
                return Finished("length")
        self.last = cont
        self.ledger = AttemptLedger(cont.pieces)
        prompt = [*self.prompt_ids, *(int(t) for t in cont.elements)]
        return _Attempt(self.ledger), self._body(prompt, budget)

    def record(self, attempt: _Attempt, text: str, ids: list[int] | None, chunk: Any) -> None:
        """One chunk's text and ids (and the prompt's ids on a first attempt's first chunk)."""
        prompt = chunk.prompt_ids()
        if prompt is not None and not attempt.ledger.carried:
            self.prompt_ids = list(prompt)
        if chunk.usage is not None and chunk.usage.completion_tokens >= 0:
            attempt.reported = chunk.usage.completion_tokens
        if ids is not None:
            attempt.count += len(ids)
        elif text:
            self.fallback = self.fallback or "the stream gave no token ids (a vLLM without them)"
        running = attempt.running()
        if text or ids:
            attempt.ledger.record(text, ids, running or 0)

    # --- internals ----------------------------------------------------------------

    def _why_not(self, progress: Progress) -> str | None:
        if self.prompt_ids is None:
            return "the stream gave no prompt_token_ids (a vLLM without return_token_ids)"
        if progress.thinking:
            return "reasoning text cannot be continued as a completion"
        return None

    def _plan(self, prompt: str | list[int], budget: int | None, attempt: _Attempt) -> AttemptPlan:
        return self._attempt_plan(self._body(prompt, budget), attempt)

    def _attempt_plan(self, body: bytes, attempt: _Attempt) -> AttemptPlan:
        return AttemptPlan(
            path=self.path,
            body=body,
            chunk_type=VllmCompletionChunk,
            convert=lambda chunk: self.convert(chunk, attempt),
            framing="vllm",
            # counts are exact on this path; for a vLLM that sends neither ids nor
            # per-chunk usage, the limit lets the assembler bound them safely
            token_limit=self.token_limit,
        )

    def _body(self, prompt: str | list[int], budget: int | None) -> bytes:
        req = self.request
        fields: dict[str, Any] = msgspec.to_builtins(
            msgspec.structs.replace(req, extra_body=None, echo=None)
        )
        fields.update(req.extra_body or {})
        fields["prompt"] = prompt
        if budget is not None:
            fields["max_tokens"] = budget
        fields["return_token_ids"] = True
        return _encoder.encode(fields)

    def convert(self, chunk: VllmCompletionChunk, attempt: _Attempt) -> CompletionChunk:
        """A vLLM chunk as the caller's completion chunk; records its ids."""
        choice = chunk.choices[0] if chunk.choices else None
        text = choice.text if choice is not None else ""
        ids = choice.token_ids if choice is not None else None
        if chunk.done:
            if ids:
                attempt.count += len(ids)  # the EOS token: vLLM counts it
            if chunk.usage is not None:
                attempt.reported = chunk.usage.completion_tokens
            return CompletionChunk(
                id=chunk.id,
                created=chunk.created,
                model=chunk.model,
                system_fingerprint=chunk.system_fingerprint,
                choices=[CompletionChoice(finish_reason=choice.finish_reason if choice else None)],
                usage=_usage(chunk.usage, attempt),
                done=True,
            )
        self.record(attempt, text, ids, chunk)
        running = attempt.running()
        return CompletionChunk(
            id=chunk.id,
            created=chunk.created,
            model=chunk.model,
            system_fingerprint=chunk.system_fingerprint,
            choices=[CompletionChoice(text=text, logprobs=choice.logprobs if choice else None)],
            timings=Timings(predicted_n=running) if running is not None else None,
        )


class VllmChatPlanner:
    """A chat stream on vLLM whose resumes are token-id completions of the rendered prompt."""

    def __init__(self, request: ChatCompletionRequest, *, path: str | None = None) -> None:
        #: The prefill path (``continue_final_message``), for a stream without ids.
        self.text_path = OpenAIPlanner(request, flavor="vllm", path=path)
        self.request: ChatCompletionRequest = self.text_path.request
        self.token_limit: int | None = self.text_path.token_limit
        req = self.request
        self.completions = VllmCompletionPlanner(
            CompletionRequest(
                model=req.model,
                prompt="",
                stream=True,
                stream_options=req.stream_options,
                max_tokens=self.token_limit,
                temperature=req.temperature,
                top_p=req.top_p,
                stop=req.stop,
                seed=req.seed,
                presence_penalty=req.presence_penalty,
                frequency_penalty=req.frequency_penalty,
                logit_bias=req.logit_bias,
                user=req.user,
                extra_body=req.extra_body,
            )
        )
        self._first: VllmChatChunk | None = None  # the first attempt's id, model...

    @property
    def caller_chunk_type(self) -> type[ChatCompletionChunk]:
        return ChatCompletionChunk

    def initial(self) -> AttemptPlan:
        self.completions.reset()
        self._first = None
        req = self.request
        if req.tools or req.response_format is not None:
            self.completions.fallback = "tools and response_format are not applied by completions"
        extra = {**(req.extra_body or {}), "return_token_ids": True}
        attempt = _Attempt(self.completions.ledger)
        return AttemptPlan(
            path=self.text_path.path,
            body=encode_request(msgspec.structs.replace(req, extra_body=extra)),
            chunk_type=VllmChatChunk,
            convert=lambda chunk: self._convert_chat(chunk, attempt),
            framing="vllm",
            # counts are exact on this path; for a vLLM that sends neither ids nor
            # per-chunk usage, the limit lets the assembler bound them safely
            token_limit=self.token_limit,
        )

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        if not progress.started:
            return self.initial()
        plan = self.completions.resume(progress)
        if plan is None:
            return self.text_path.next(progress)
        if isinstance(plan, Finished):
            return plan
        attempt, body = plan
        inner = self.completions
        return AttemptPlan(
            path=inner.path,
            body=body,
            chunk_type=VllmCompletionChunk,
            convert=lambda chunk: self._as_chat(inner.convert(chunk, attempt)),
            framing="vllm",
            # counts are exact on this path; for a vLLM that sends neither ids nor
            # per-chunk usage, the limit lets the assembler bound them safely
            token_limit=self.token_limit,
        )

    def _convert_chat(self, chunk: VllmChatChunk, attempt: _Attempt) -> ChatCompletionChunk:
        if self._first is None and chunk.id:
            self._first = chunk
        choice = chunk.choices[0] if chunk.choices else None
        if chunk.done:
            ids = choice.token_ids if choice is not None else None
            if ids:
                attempt.count += len(ids)
            if chunk.usage is not None:
                attempt.reported = chunk.usage.completion_tokens
            return ChatCompletionChunk(
                id=chunk.id,
                created=chunk.created,
                model=chunk.model,
                system_fingerprint=chunk.system_fingerprint,
                choices=[
                    ChatChoice(
                        delta=Delta(), finish_reason=choice.finish_reason if choice else None
                    )
                ],
                usage=_usage(chunk.usage, attempt),
                done=True,
            )
        delta = choice.delta if choice is not None else Delta()
        if delta.reasoning or delta.reasoning_content or delta.tool_calls or delta.refusal:
            self.completions.fallback = (
                self.completions.fallback or "the chat streamed reasoning, tool calls or a refusal"
            )
        ids = choice.token_ids if choice is not None else None
        self.completions.record(attempt, delta.content or "", ids, chunk)
        running = attempt.running()
        return ChatCompletionChunk(
            id=chunk.id,
            created=chunk.created,
            model=chunk.model,
            system_fingerprint=chunk.system_fingerprint,
            choices=[ChatChoice(delta=delta, logprobs=choice.logprobs if choice else None)],
            timings=Timings(predicted_n=running) if running is not None else None,
        )

    def _as_chat(self, chunk: CompletionChunk) -> ChatCompletionChunk:
        """A resumed attempt's completion chunk as the chat chunk the caller expects."""
        first = self._first
        choice = chunk.choices[0] if chunk.choices else None
        text = choice.text if choice is not None else ""
        return ChatCompletionChunk(
            id=first.id if first is not None else chunk.id,
            created=first.created if first is not None else chunk.created,
            model=first.model if first is not None else chunk.model,
            system_fingerprint=chunk.system_fingerprint,
            usage=chunk.usage,
            timings=chunk.timings,
            done=chunk.done,
            choices=[
                ChatChoice(
                    delta=Delta(content=text or None),
                    finish_reason=choice.finish_reason if choice is not None else None,
                    logprobs=choice.logprobs if choice is not None else None,
                )
            ],
        )


def _refusal(request: CompletionRequest) -> str | None:
    """Why a request's text and ids would not line up chunk by chunk (None: they do).

    With stop strings vLLM's detokenizer holds back the last ``max(len(stop)) - 1``
    characters of text (a stop string may be forming: ``stop_buffer_length`` in
    ``vllm/v1/engine/detokenizer.py``) while the ids of those steps are streamed, so
    a chunk's ids run ahead of its text; such a stream resumes by text."""
    stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
    if (request.extra_body or {}).get("include_stop_str_in_output"):
        return None
    if max((len(s) for s in stops), default=0) > 1:
        return "stop strings longer than one character: vLLM's text lags its ids"
    return None


def _usage(usage: Usage | None, attempt: _Attempt) -> Usage | None:
    """The final chunk's usage: the server's, else counted from the ids streamed."""
    if usage is not None:
        return usage
    if attempt.count:
        return Usage(completion_tokens=attempt.count, total_tokens=attempt.count)
    return None
