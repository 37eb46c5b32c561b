"""Resume planning for Anthropic's Messages API (sans-I/O).

A stream that broke after output started is continued by an assistant prefill:
the messages plus a trailing ``{"role": "assistant", "content": partial}`` (a
caller's own trailing assistant message is extended instead), which the model
continues ("prefill Claude's response"). ``max_tokens`` shrinks by the tokens
already delivered; every other field is carried unchanged.

The API refuses a final assistant message that ends with whitespace, so trailing
whitespace of the partial is left out of the request and must be the first thing
the continuation says: the attempt's ``convert`` drops exactly those characters
from its first text (if the continuation says something else, nothing is dropped
and the verified seam flags it).

What is resumed: a text answer in one text block (index 0). What is not (the
stream fails with the cause, failures before the first token are still retried):
extended thinking (prefill is not supported with it), a ``tool_use`` or any other
non-text block, a second content block, and models that refuse prefill (Claude
4.6 and later answer a trailing assistant message with a 400).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..plan import AttemptPlan, Finished, NotResumable, Progress
from .types import MessageChunk, MessageParam, MessagesRequest, encode_request

PATH = "/v1/messages"

#: Models that answer a trailing assistant message with a 400 (Claude 4.6 on).
_NO_PREFILL = re.compile(r"claude-(?:[a-z]+-)?(?:4-[6-9]|4\.[6-9]|[5-9])(?:\b|-)")


class AnthropicPlanner:
    """Plans the first request and every resume of one Messages stream."""

    def __init__(self, request: MessagesRequest, *, path: str = PATH) -> None:
        self.request = msgspec.structs.replace(request, stream=True)
        self.path = path
        self.token_limit: int | None = request.max_tokens if request.max_tokens >= 0 else None
        #: Why a resume cannot continue this stream (set on the chunks as they come).
        self.blocked: str | None = None
        #: A ``message_start`` reached the caller: later attempts drop theirs.
        self.opened = False
        if _thinking_on(request.thinking):
            self.blocked = (
                "extended thinking is on: Anthropic does not accept a prefill with it, so "
                "a stream that broke after output started cannot be continued"
            )
        elif _NO_PREFILL.search(request.model):
            self.blocked = (
                f"{request.model} does not accept an assistant prefill (Claude 4.6 and "
                "later answer it with a 400), so a broken stream cannot be continued"
            )

    caller_chunk_type = MessageChunk

    def initial(self) -> AttemptPlan:
        return AttemptPlan(
            path=self.path,
            body=encode_request(self.request),
            chunk_type=MessageChunk,
            convert=self._watch,
            framing="anthropic",
            token_limit=self.token_limit,
        )

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        if not progress.started:
            if not self.opened:
                return self.initial()  # a plain retry: nothing reached the caller
            # a start over after output (a seam that holds back everything): the
            # caller has the opening events already
            return AttemptPlan(
                path=self.path,
                body=encode_request(self.request),
                chunk_type=MessageChunk,
                convert=_Continuation("", self),
                framing="anthropic",
                token_limit=self.token_limit,
            )
        if self.blocked is not None:
            return NotResumable(self.blocked)
        if progress.thinking:
            return NotResumable("the answer has a thinking block: it cannot be prefilled")
        req = self.request
        budget = req.max_tokens - progress.tokens
        if budget <= 0:
            return Finished("length")
        messages, dropped = _prefill(req.messages, progress.text)
        resumed = msgspec.structs.replace(req, messages=messages, max_tokens=budget)
        return AttemptPlan(
            path=self.path,
            body=encode_request(resumed),
            chunk_type=MessageChunk,
            convert=_Continuation(dropped, self),
            framing="anthropic",
            token_limit=self.token_limit,
        )

    def _watch(self, chunk: MessageChunk) -> MessageChunk:
        """Notes what a prefill cannot continue (cheap on a text delta of block 0)."""
        ev = chunk.event
        if chunk.before or (
            ev is not None
            and not chunk.done
            and (ev.index or ev.delta is None or ev.delta.type != "text_delta")
        ):
            self._inspect(chunk)
        return chunk

    def _inspect(self, chunk: MessageChunk) -> None:
        if not self.opened:
            self.opened = any(ev.type == "message_start" for ev in chunk.before)
        if self.blocked is not None:
            return
        events = [*chunk.before, *([chunk.event] if chunk.event is not None else [])]
        for ev in events:
            if ev.type == "content_block_start":
                kind = (ev.content_block or {}).get("type")
                if kind != "text":
                    self.blocked = f"the answer has a {kind} block: only text is resumed"
                elif ev.index:
                    self.blocked = "the answer has several content blocks: only one is resumed"
            elif ev.type == "content_block_delta" and ev.index:
                self.blocked = "the answer has several content blocks: only one is resumed"
            elif (
                ev.type == "content_block_delta"
                and ev.delta is not None
                and ev.delta.type not in ("text_delta", "citations_delta")
            ):
                self.blocked = f"the answer has a {ev.delta.type}: only text is resumed"
            if self.blocked is not None:
                return


class _Continuation:
    """The chunks of a resumed attempt: without a second ``message_start`` and block 0's
    ``content_block_start`` (the SDK has them), and without the whitespace the request
    left out (exactly those characters, only where the continuation begins with them)."""

    __slots__ = ("_planner", "_ws")

    def __init__(self, dropped: str, planner: AnthropicPlanner) -> None:
        self._ws = dropped
        self._planner = planner

    def __call__(self, chunk: MessageChunk) -> MessageChunk:
        if chunk.before:
            kept = [ev for ev in chunk.before if not _opening(ev)]
            if len(kept) != len(chunk.before):
                chunk = msgspec.structs.replace(chunk, before=kept)
        chunk = self._planner._watch(chunk)
        ws = self._ws
        if ws and not chunk.done and chunk.event is not None and chunk.event.delta is not None:
            d = chunk.event.delta
            text = d.text or ""
            if text.startswith(ws):
                self._ws, text = "", text[len(ws) :]
            elif ws.startswith(text):
                self._ws, text = ws[len(text) :], ""
            else:
                self._ws = ""  # something else: nothing dropped, the seam check decides
                return chunk
            ev = msgspec.structs.replace(chunk.event, delta=msgspec.structs.replace(d, text=text))
            chunk = msgspec.structs.replace(chunk, event=ev)
        return chunk


def _opening(ev: Any) -> bool:
    return ev.type == "message_start" or (ev.type == "content_block_start" and not ev.index)


def _prefill(messages: list[MessageParam], text: str) -> tuple[list[MessageParam], str]:
    """The messages with ``text`` as (or appended to) the trailing assistant message,
    its trailing whitespace left out; and the whitespace left out."""
    if messages and messages[-1].role == "assistant":
        last = messages[-1]
        if isinstance(last.content, str):
            whole = last.content + text
            kept = whole.rstrip()
            content: str | list[Any] = kept
        else:
            blocks = list(last.content)
            tail = blocks[-1] if blocks else None
            if isinstance(tail, dict) and tail.get("type") == "text":
                whole = str(tail.get("text", "")) + text
                kept = whole.rstrip()
                blocks[-1] = {**tail, "text": kept}
            else:
                whole = kept = text.rstrip()
                blocks.append({"type": "text", "text": kept})
            content = blocks
        dropped = whole[len(kept) :]
        return [*messages[:-1], msgspec.structs.replace(last, content=content)], dropped
    kept = text.rstrip()
    dropped = text[len(kept) :]
    if not kept:
        return list(messages), dropped
    return [*messages, MessageParam(role="assistant", content=kept)], dropped


def _thinking_on(thinking: Any) -> bool:
    return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")
