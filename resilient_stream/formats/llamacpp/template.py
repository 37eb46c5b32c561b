"""Chats resumed through the model's rendered chat template (sans-I/O).

Some servers close a trailing assistant message in their chat template and
start a new answer (llama-cpp-python ignores ``continue_final_message``), so
a chat cannot be resumed by prefill there. The completion endpoint of the same
server continues any text, so a resume sends the rendered conversation plus
the partial answer there, and maps the completion chunks back to chat chunks:
the caller never sees the switch.

The rendering comes from the caller (:class:`ChatTemplate`): a callable
``messages -> prompt``, or the model's Jinja template as a string (rendered
with jinja2, an optional import, the way Hugging Face renders chat templates:
``trim_blocks``/``lstrip_blocks``, ``add_generation_prompt=True``). llama-server
publishes its template at ``GET /props`` (``chat_template``), see
``resilient_stream/capabilities.py``.

* flavor ``"llama-server"``: every attempt, the first one included, is the
  native ``/completion`` with the rendered prompt and token ids
  (:class:`~.planner.LlamaServerPlanner`): token-exact chat resume.
* any other flavor: the first attempt is the caller's ``/v1/chat/completions``
  request, untouched; resumes go to ``/v1/completions`` with the rendered
  prompt + partial (text; the verified seam checks it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import msgspec

from ...errors import ConfigError, InvalidRequestError
from ..openai.planner import COMPLETION_PATH, FLAVORS, Flavor, OpenAIPlanner
from ..openai.types import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    CompletionChunk,
    CompletionRequest,
    Delta,
)
from ..plan import AttemptPlan, Finished, NotResumable, Progress
from .planner import LlamaServerPlanner

Render = Callable[[list[dict[str, Any]]], str]


class ChatTemplate:
    """Renders a conversation into the prompt the model's answer continues.

    ``ChatTemplate(fn)``: ``fn(messages)`` returns the prompt, ending where the
    assistant's answer begins. ``ChatTemplate.jinja(source, bos_token=..., eos_token=...)``:
    the model's own Jinja chat template (needs jinja2).
    """

    __slots__ = ("_render",)

    def __init__(self, render: Render) -> None:
        self._render = render

    @classmethod
    def jinja(cls, source: str, *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        try:
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "a Jinja chat template needs jinja2 (pip install jinja2), or pass a callable"
            ) from None

        def raise_exception(message: str) -> None:
            raise InvalidRequestError(f"the chat template refused the conversation: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        compiled = env.from_string(source)

        def render(messages: list[dict[str, Any]]) -> str:
            return compiled.render(
                messages=messages,
                add_generation_prompt=True,
                bos_token=bos_token,
                eos_token=eos_token,
            )

        return cls(render)

    @classmethod
    def of(cls, template: ChatTemplate | str | Render) -> ChatTemplate:
        """A template from what a caller passes: a ChatTemplate, a Jinja string, a callable."""
        if isinstance(template, ChatTemplate):
            return template
        if isinstance(template, str):
            return cls.jinja(template)
        if callable(template):
            return cls(template)
        raise ConfigError(f"chat_template must be a str or a callable, not {type(template)}")

    def prompt(self, messages: Sequence[ChatMessage]) -> tuple[str, str]:
        """(rendered prompt, the caller's own assistant prefill it ends with)."""
        plain = [_plain(m) for m in messages]
        prefill = ""
        if plain and plain[-1]["role"] == "assistant":
            prefill = str(plain.pop()["content"] or "")
        return self._render(plain) + prefill, prefill


class TemplateChatPlanner:
    """A chat stream that resumes as a completion of the rendered conversation."""

    def __init__(
        self,
        request: ChatCompletionRequest,
        template: ChatTemplate,
        *,
        flavor: str = "generic",
        path: str | None = None,
    ) -> None:
        if request.tools or request.response_format is not None:
            raise InvalidRequestError(
                "tools and response_format cannot be resumed through a chat template "
                "(the completion endpoint does not apply them); leave chat_template unset"
            )
        self.request = msgspec.structs.replace(request, stream=True)
        self.native = flavor == "llama-server"
        prompt, _ = template.prompt(request.messages)
        limits = [n for n in (request.max_tokens, request.max_completion_tokens) if n is not None]
        completion = CompletionRequest(
            model=request.model,
            prompt=prompt,
            stream=True,
            stream_options=request.stream_options,
            max_tokens=min(limits) if limits else None,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logit_bias=request.logit_bias,
            user=request.user,
            extra_body=request.extra_body,
        )
        # The server's own rules (how its chunks are counted) hold on both endpoints.
        known = flavor in FLAVORS and not self.native
        text_flavor = cast(Flavor, flavor) if known else "generic"
        self._chat = OpenAIPlanner(self.request, flavor=text_flavor, path=path)
        self._inner: LlamaServerPlanner | OpenAIPlanner = (
            LlamaServerPlanner(completion)
            if self.native
            else OpenAIPlanner(completion, flavor=text_flavor, path=COMPLETION_PATH)
        )
        self.token_limit: int | None = self._inner.token_limit

    @property
    def caller_chunk_type(self) -> type[ChatCompletionChunk]:
        return ChatCompletionChunk

    def initial(self) -> AttemptPlan:
        if self.native:
            return self._as_chat(self._inner.initial(), first=True)
        return self._chat.initial()

    def next(self, progress: Progress) -> AttemptPlan | Finished | NotResumable:
        if not progress.started:
            return self.initial()
        plan = self._inner.next(Progress(text=progress.text, tokens=progress.tokens))
        if not isinstance(plan, AttemptPlan):
            return plan
        return self._as_chat(plan, first=False)

    def _as_chat(self, plan: AttemptPlan, *, first: bool) -> AttemptPlan:
        inner = plan.convert
        role = [first]  # the first chunk of the first attempt opens the assistant turn

        def convert(chunk: Any) -> ChatCompletionChunk:
            done: CompletionChunk = inner(chunk) if inner is not None else chunk
            return _chat_chunk(done, role)

        return dataclasses.replace(plan, convert=convert)


def _chat_chunk(chunk: CompletionChunk, role: list[bool]) -> ChatCompletionChunk:
    choice = chunk.choices[0] if chunk.choices else None
    text = choice.text if choice is not None else ""
    delta = Delta(content=text or None)
    if role[0] and text:
        delta = Delta(role="assistant", content=text)
        role[0] = False
    return ChatCompletionChunk(
        id=chunk.id,
        created=chunk.created,
        model=chunk.model,
        system_fingerprint=chunk.system_fingerprint,
        usage=chunk.usage,
        timings=chunk.timings,
        done=chunk.done,
        choices=[
            ChatChoice(
                delta=delta,
                finish_reason=choice.finish_reason if choice is not None else None,
            )
        ],
    )


def _plain(message: ChatMessage) -> dict[str, Any]:
    """A message as a template sees it (content parts joined into one string)."""
    out: dict[str, Any] = msgspec.to_builtins(message)
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    out.setdefault("content", "")
    return out
