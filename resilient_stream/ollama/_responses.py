"""Turn our chunks into ollama-python's response objects, and our errors into its errors.

With the ``ollama`` package installed, callers get ollama's own pydantic
``GenerateResponse`` / ``ChatResponse`` and ``ollama.ResponseError`` /
``ollama.RequestError``, so ``isinstance`` checks and ``except
ollama.ResponseError`` in existing code keep working. Without it they get the
wire chunks themselves and look-alike errors (:mod:`._native`). Either way, a
field is "set" (``"key" in obj``) exactly when the Ollama server would have
sent it.

Per-chunk cost: pydantic v2's validation runs in Rust and is several times
faster than ``model_construct`` (1.4 us vs 6 us for a generate part, measured
with pydantic 2.14), so every part goes through plain validation. Without
``ollama``, a part costs nothing: it is the chunk.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, NoReturn

import httpx
import msgspec

from ..errors import HTTPStatusError, InvalidRequestError, ServerReportedError, StreamError
from ..formats.ollama.types import ChatChunk, GenerateChunk, Logprob, ToolCall
from . import _native

#: Set RESILIENT_OLLAMA_NATIVE_TYPES=1 to use the look-alikes even with ollama installed.
_FORCE_NATIVE = os.environ.get("RESILIENT_OLLAMA_NATIVE_TYPES", "") not in ("", "0")

_ollama: ModuleType | None
try:
    if _FORCE_NATIVE:
        raise ImportError("native types requested")
    import ollama as _ollama
except ImportError:  # pragma: no cover - exercised in environments without ollama
    _ollama = None

USING_OLLAMA_TYPES = _ollama is not None
"""True when responses are ollama's own pydantic models."""

GenerateResponse: Any
ChatResponse: Any
Message: Any
ResponseError: type[Exception]
RequestError: type[Exception]
if _ollama is not None:
    GenerateResponse = _ollama.GenerateResponse
    ChatResponse = _ollama.ChatResponse
    Message = _ollama.Message
    ResponseError = _ollama.ResponseError
    RequestError = _ollama.RequestError
else:  # pragma: no cover
    GenerateResponse = _native.GenerateResponse
    ChatResponse = _native.ChatResponse
    Message = _native.Message
    ResponseError = _native.ResponseError
    RequestError = _native.RequestError

CONNECTION_ERROR_MESSAGE = (
    "Failed to connect to Ollama. Please check that Ollama is downloaded, running and "
    "accessible. https://ollama.com/download"
)

_METRICS = (
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def _dump_tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"function": {"name": c.function.name, "arguments": c.function.arguments}} for c in calls
    ]


def _dump_logprobs(items: list[Logprob]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for lp in items:
        d: dict[str, Any] = {"token": lp.token, "logprob": lp.logprob}
        if lp.top_logprobs is not None:
            d["top_logprobs"] = [{"token": t.token, "logprob": t.logprob} for t in lp.top_logprobs]
        out.append(d)
    return out


def _metrics(chunk: GenerateChunk | ChatChunk, fields: dict[str, Any]) -> None:
    if chunk.done:
        for name in _METRICS:
            value = getattr(chunk, name)
            if value is not None:
                fields[name] = value


class ResponseFactory:
    """Builds response objects of one family: ollama's pydantic models, or (``native``)
    the wire chunks themselves."""

    def __init__(self, native: bool = not USING_OLLAMA_TYPES) -> None:
        self.native = native
        if not native:
            assert _ollama is not None
            self.generate_type: Any = _ollama.GenerateResponse
            self.chat_type: Any = _ollama.ChatResponse

    # --- generate --------------------------------------------------------------------

    def generate(self, chunk: GenerateChunk) -> Any:
        if self.native:
            return chunk
        fields: dict[str, Any] = {
            "model": chunk.model,
            "created_at": chunk.created_at,
            "response": chunk.response,
            "done": chunk.done,
        }
        if chunk.thinking is not None:
            fields["thinking"] = chunk.thinking
        if chunk.context is not None:
            fields["context"] = chunk.context
        if chunk.logprobs is not None:
            fields["logprobs"] = _dump_logprobs(chunk.logprobs or [])
        _metrics(chunk, fields)
        return self.generate_type.model_validate(fields)

    def generate_final(
        self, last: GenerateChunk, text: str, thinking: str, logprobs: list[Logprob]
    ) -> Any:
        """The single response of ``stream=False``: the whole text plus the final metrics."""
        if self.native:
            return msgspec.structs.replace(
                last, response=text, thinking=thinking or None, logprobs=logprobs or None
            )
        fields: dict[str, Any] = {
            "model": last.model,
            "created_at": last.created_at,
            "response": text,
            "done": last.done,
        }
        if thinking:
            fields["thinking"] = thinking
        if last.context is not None:
            fields["context"] = last.context
        if logprobs:
            fields["logprobs"] = _dump_logprobs(logprobs)
        _metrics(last, fields)
        return self.generate_type.model_validate(fields)

    # --- chat ------------------------------------------------------------------------

    def _message(
        self, role: str, content: str, thinking: str | None, tool_calls: list[ToolCall] | None
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": role or "assistant", "content": content}
        if thinking is not None:
            msg["thinking"] = thinking
        if tool_calls:
            msg["tool_calls"] = _dump_tool_calls(tool_calls or [])
        return msg

    def chat(self, chunk: ChatChunk) -> Any:
        m = chunk.message
        if self.native:
            if m.role:
                return chunk
            # a final chunk made here (the budget ran out at a seam): Ollama names the role
            return msgspec.structs.replace(
                chunk, message=msgspec.structs.replace(m, role="assistant")
            )
        msg = self._message(m.role, m.content, m.thinking, m.tool_calls)
        fields: dict[str, Any] = {
            "model": chunk.model,
            "created_at": chunk.created_at,
            "done": chunk.done,
        }
        if chunk.logprobs is not None:
            fields["logprobs"] = _dump_logprobs(chunk.logprobs)
        _metrics(chunk, fields)
        fields["message"] = msg
        return self.chat_type.model_validate(fields)

    def chat_final(
        self,
        last: ChatChunk,
        text: str,
        thinking: str,
        tool_calls: list[ToolCall],
        logprobs: list[Logprob],
    ) -> Any:
        if self.native:
            message = msgspec.structs.replace(
                last.message,
                role=last.message.role or "assistant",
                content=text,
                thinking=thinking or None,
                tool_calls=tool_calls or None,
            )
            return msgspec.structs.replace(last, message=message, logprobs=logprobs or None)
        msg = self._message(last.message.role, text, thinking or None, tool_calls or None)
        fields: dict[str, Any] = {
            "model": last.model,
            "created_at": last.created_at,
            "done": last.done,
            "message": msg,
        }
        if logprobs:
            fields["logprobs"] = _dump_logprobs(logprobs)
        _metrics(last, fields)
        return self.chat_type.model_validate(fields)


def raise_mapped(exc: BaseException) -> NoReturn:
    """Raise what ollama-python would raise for ``exc``, with ``exc`` as its cause (or
    ``exc`` itself when it already is that)."""
    mapped = map_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


def map_error(exc: BaseException) -> BaseException:
    """The exception ollama-python would raise for what went wrong (ours stays the cause).

    - HTTP status errors -> ``ResponseError(error, status_code)``;
    - an ``{"error": ...}`` line mid-stream -> ``ResponseError(error, -1)``;
    - a request we refuse to send -> ``RequestError``;
    - could not connect (after our retries) -> builtin ``ConnectionError``;
    - anything else we gave up on (attempts, deadline, budget) -> ``ResponseError(msg, -1)``.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 16:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        if isinstance(e, HTTPStatusError):
            return ResponseError(e.body or str(e), e.status_code)
        if isinstance(e, ServerReportedError):
            return ResponseError(e.error, -1)
    if isinstance(exc, InvalidRequestError):
        return RequestError(str(exc))
    if any(isinstance(e, httpx.ConnectError | httpx.ConnectTimeout) for e in chain):
        return ConnectionError(f"{CONNECTION_ERROR_MESSAGE} ({exc})")
    if isinstance(exc, StreamError):
        return ResponseError(str(exc), -1)
    return exc
