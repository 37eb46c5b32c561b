"""The attempts of one logical stream: opening each, booking failures with the policy,
planning the next request, and the log events that say so.

``Attempts`` is the I/O side of :class:`~resilient_stream.policy.AttemptPolicy`:
the request/headers phase of an attempt is retried by tenacity's
``AsyncRetrying`` (nothing is yielded inside a tenacity attempt, and
``CancelledError`` is never retried), with the policy's verdicts as its wait;
a failure after headers goes through :meth:`Attempts.fail`, which asks the
planner for the next request (a resume if output started). The stream
(stream.py) reads the bodies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar, cast

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from . import attempt, failures
from .codec.content_encoding import Inflater
from .context import StreamContext
from .errors import ResumeDivergedError, StreamError
from .formats import framing
from .formats.plan import AttemptPlan, Finished, NotResumable, Planner
from .formats.reader import RecordReader
from .logging import ATTEMPT, DIVERGED, GIVE_UP, REPLICA_EJECTED, RESUME, RETRY_WAIT
from .policy import AttemptPolicy, GiveUp, Phase
from .result import AttemptRecord
from .resume.assembler import StreamAssembler
from .retry import is_retryable

ChunkT = TypeVar("ChunkT")


@dataclass(frozen=True, slots=True)
class Opened:
    """An attempt whose response headers came: what reading its body takes."""

    response: httpx.Response
    inflate: Inflater | None
    reader: RecordReader


class _GiveUp(Exception):
    """Internal: stop the tenacity loop and end the stream with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Attempts(Generic[ChunkT]):
    """Opens the attempts of one stream and decides, with its policy, what follows a
    failure (see the module docstring)."""

    __slots__ = ("_asm", "_cfg", "_ctx", "_planner", "_sid", "error", "history", "plan", "policy")

    def __init__(
        self, ctx: StreamContext, planner: Planner, asm: StreamAssembler[ChunkT], sid: int
    ) -> None:
        self._ctx = ctx
        self._cfg = ctx.config
        self._planner = planner
        self._asm = asm
        self._sid = sid
        self.policy = AttemptPolicy(ctx.config, ctx.replicas, ctx.rng)
        self.plan: AttemptPlan | None = None
        # made at the first record (an open stream has none yet: one tracked object less
        # an open stream, for the garbage collector to scan; a tuple: an append fails loudly)
        self.history: list[AttemptRecord] = cast("list[AttemptRecord]", ())
        #: The error the stream ended with (set once, when it gives up).
        self.error: BaseException | None = None

    def start(self, now: float) -> None:
        self.policy.start(now)
        self.plan = self._planner.initial()

    # --- opening -------------------------------------------------------------------

    async def open_retrying(self, first: BaseException) -> Opened:
        """The first try failed with ``first``: retry the request/headers phase with
        tenacity. ``first`` is handed to ``AsyncRetrying`` as its first outcome, so
        tenacity decides exactly as if it had run that try itself."""
        failed: BaseException | None = first
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for try_ in retrying:
                with try_:
                    if failed is not None:
                        outcome, failed = failed, None
                        raise outcome  # the first try's, for tenacity to judge
                    return await self.try_open()
        except _GiveUp as give_up:
            self._give_up(give_up.error, give_up.error.__cause__)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._give_up(self.policy.give_up(exc), exc)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def try_open(self) -> Opened:
        """One try of the next attempt. The first runs on its own: most succeed, and
        tenacity's machinery costs more than the request's own set-up. The stream
        awaits it directly (no coroutine frame around it, held by every stream that
        waits for its headers) and hands a failure to :meth:`open_retrying`."""
        plan = self.plan
        assert plan is not None
        policy = self.policy
        replica = policy.next_replica(time.monotonic())
        self._asm.begin_attempt(plan)
        self._ctx.log.debug(
            ATTEMPT, stream=self._sid, attempt=policy.attempts, endpoint=replica.url, path=plan.path
        )
        now = time.monotonic()
        wait = min(self._cfg.first_token_timeout, policy.deadline - now)
        try:
            response, inflate = await attempt.send(
                self._ctx, plan, replica.url, headers_within=wait
            )
        except TimeoutError:
            if time.monotonic() >= policy.deadline:
                raise _GiveUp(policy.deadline_error(None)) from None
            exc = failures.headers_timeout(
                time.monotonic() - now, self._cfg.first_token_timeout, replica.url
            )
            self._book(exc, Phase.HEADERS)
            raise exc from None
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._book(exc, Phase.HEADERS)
            raise
        reader = framing(plan.framing).reader(self._cfg.max_line_bytes, self._ctx.decoder_for(plan))
        return Opened(response, inflate, reader)

    # tenacity hooks (request/headers phase): the decisions are the policy's

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return 0.0
        verdict = self.policy.admit(
            exc, now=time.monotonic(), phase=Phase.HEADERS, started=self._asm.started
        )
        if isinstance(verdict, GiveUp):
            raise _GiveUp(verdict.error) from exc
        return verdict.delay

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self._ctx.log.info(
            RETRY_WAIT,
            stream=self._sid,
            attempt=self.policy.attempts,
            wait=round(wait, 3),
            endpoint=self.policy.endpoint,
            cause=repr(exc),
        )

    # --- failures ------------------------------------------------------------------

    async def fail(self, exc: BaseException) -> tuple[list[ChunkT], bool]:
        """The current attempt broke after its headers (its response is closed). Plans
        the next attempt (a resume if output started, else a retry) and waits its
        delay; raises the error to end with when none may follow.

        Returns the chunks now due to the caller (held at a seam, or the final chunk
        made locally) and whether the stream is finished without another request."""
        replica = self.policy.replica
        final = self._book(exc, Phase.BODY)
        reason = failures.describe(exc)
        self.record(reason)
        if final is not None:
            self._give_up(final, exc)
        asm = self._asm
        received = asm.tokens
        due = asm.interrupt(
            attempt=self.policy.attempts + 1,
            reason=reason,
            endpoint=replica.url if replica else "",
        )
        plan = self._planner.next(asm.progress())
        if isinstance(plan, Finished):
            return due + asm.finish_locally(plan.done_reason), True
        if isinstance(plan, NotResumable):
            self._give_up(self.policy.give_up(exc, note=plan.reason), exc)
        started = asm.started
        verdict = self.policy.admit(exc, now=time.monotonic(), phase=Phase.BODY, started=started)
        if isinstance(verdict, GiveUp):
            self._give_up(verdict.error, exc)
        self.plan = plan
        log = self._ctx.log
        if started:
            log.info(
                RESUME,
                stream=self._sid,
                attempt=self.policy.attempts + 1,
                tokens=received,
                endpoint=self.policy.endpoint,
                cause=reason,
                **({"partial": asm.text} if self._cfg.log_content else {}),
            )
        else:  # a retry after headers but before any output
            log.info(
                RETRY_WAIT,
                stream=self._sid,
                attempt=self.policy.attempts,
                wait=round(verdict.delay, 3),
                endpoint=self.policy.endpoint,
                cause=repr(exc),
            )
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        return due, False

    def diverged(self) -> tuple[list[ChunkT], bool]:
        """The attempt after a seam did not regenerate the held-back overlap (it is
        abandoned). ``on_divergence="raise"`` ends the stream; ``"flag"`` marks the seam
        unverified and plans the next request from everything delivered. Returns
        what :meth:`fail` returns."""
        asm = self._asm
        continuation = asm.diverged_continuation()
        overlap = asm.seams[-1].overlap if asm.seams else 0
        self.record("diverged: the continuation did not regenerate the held-back overlap")
        self._ctx.log.info(
            DIVERGED,
            stream=self._sid,
            attempt=self.policy.attempts,
            endpoint=self.policy.endpoint,
            overlap=overlap,
            action=self._cfg.on_divergence,
            **(
                {"expected": asm.text[len(asm.text) - overlap :], "got": continuation}
                if self._cfg.log_content
                else {}
            ),
        )
        if self._cfg.on_divergence == "raise":
            self._give_up(
                ResumeDivergedError(
                    f"resumed attempt {self.policy.attempts} did not regenerate the last "
                    f"{overlap} characters delivered: its continuation would not be the "
                    "same answer (on_divergence='raise'; .delivered holds what was delivered)",
                    delivered=asm.text,
                    continuation=continuation,
                ),
                None,
            )
        asm.continue_unverified()
        plan = self._planner.next(asm.progress())
        if isinstance(plan, Finished):
            return asm.finish_locally(plan.done_reason), True
        if isinstance(plan, NotResumable):
            error = StreamError(f"cannot continue after a diverged seam: {plan.reason}")
            self._give_up(self.policy.give_up(error), None)
        self.plan = plan
        return [], False

    def _book(self, exc: BaseException, phase: Phase) -> BaseException | None:
        """Report a failure to the policy and log an ejection; returns the error to end
        with when no further attempt may follow, whatever the budgets say."""
        if self._cfg.log_content and isinstance(exc, StreamError):
            exc.reveal_content()  # opted in: messages (and log events) may quote content
        noted = self.policy.on_failure(
            exc, now=time.monotonic(), phase=phase, started=self._asm.started
        )
        if noted.ejected is not None:
            self._ctx.log.warning(
                REPLICA_EJECTED,
                endpoint=noted.ejected.url,
                readmit_after=self._cfg.replica_readmit_after,
                cause=repr(exc),
            )
        return noted.give_up

    # --- records -------------------------------------------------------------------

    def record(self, outcome: str) -> None:
        """One line of ``result.history``: how the current attempt ended."""
        plan = self.plan
        if not self.history:
            self.history = []
        self.history.append(
            AttemptRecord(
                number=self.policy.attempts,
                endpoint=self.policy.endpoint or "",
                path=plan.path if plan else "",
                tokens=self._asm.attempt_tokens,
                outcome=outcome,
            )
        )

    def _give_up(self, error: BaseException, cause: BaseException | None) -> NoReturn:
        """End the stream with ``error`` (the policy's verdict on ``cause``): keep it, log
        it once, and raise it from its cause (never an error from itself)."""
        if cause is error:
            cause = error.__cause__
        if not isinstance(error, asyncio.CancelledError):
            self.error = error
            self._ctx.log.warning(
                GIVE_UP,
                stream=self._sid,
                attempts=self.policy.attempts,
                endpoint=self.policy.endpoint,
                cause=repr(cause if cause is not None else error),
                error=type(error).__name__,
            )
        raise error from cause
