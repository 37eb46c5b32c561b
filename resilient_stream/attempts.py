"""The attempts of one logical stream: opening, retrying, resuming, giving up.

``AttemptLoop`` holds a stream's state and everything about attempts: the
request/headers phase of each attempt is retried by tenacity's
``AsyncRetrying`` (backoff with full jitter, Retry-After, attempt and deadline
limits, the replicas' retry budgets); a failure after headers ends the attempt
and plans the next one, which resumes from what the caller already has
(``resume/``). Nothing is yielded inside a tenacity attempt, and
``CancelledError`` is never retried. ``ResilientStream`` (stream.py) adds the
reading side: iteration, decoding, delivering chunks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Generic, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from .buffering import IdleTimeoutPolicy
from .codec.chunks import GenerateChunk
from .codec.content_encoding import IDENTITY, Inflater, UnsupportedEncodingError, inflater_for
from .codec.framing import Decoder, Framer, framing
from .codec.ndjson import ChunkDecoder, NdjsonFramer
from .errors import (
    AttemptsExhausted,
    ConnectionLostError,
    GoAwayError,
    HTTPStatusError,
    StallError,
    StreamError,
)
from .failures import (
    blames_replica,
    budget_error,
    deadline_error,
    describe,
    give_up_error,
    status_error,
)
from .logging import ATTEMPT, GIVE_UP, REPLICA_EJECTED, RESUME, RETRY_WAIT
from .replicas import Replica
from .result import AttemptRecord
from .resume.assembler import StreamAssembler
from .resume.planner import AttemptPlan, Finished, NotResumable, Planner
from .retry import (
    FREE_TRANSPARENT_RETRIES,
    backoff_delay,
    is_retryable,
    is_transparent,
    note_transparent_retries,
)
from .watchdog import StallWatchdog

if TYPE_CHECKING:
    from .client import StreamClient

ChunkT = TypeVar("ChunkT")

# identity: compression holds tokens back until a compressor block fills (a body that is
# compressed anyway is decoded as it comes: codec/content_encoding.py)
_HEADERS = {
    "ndjson": {
        "content-type": "application/json",
        "accept": "application/x-ndjson",
        "accept-encoding": IDENTITY,
    },
    "sse": {
        "content-type": "application/json",
        "accept": "text/event-stream",
        "accept-encoding": IDENTITY,
    },
}


_NO_LIMIT = 1 << 62


class _GiveUp(Exception):
    """Internal: stop the tenacity loop and raise ``error`` to the caller."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class AttemptLoop(Generic[ChunkT]):
    """A stream's state and its attempts (see the module docstring)."""

    def __init__(
        self, client: StreamClient, planner: Planner, caller_type: type[ChunkT], sid: int
    ) -> None:
        cfg = client.config
        self._client = client
        self._cfg = cfg
        self._planner = planner
        self.id = sid
        self._asm: StreamAssembler[ChunkT] = StreamAssembler(
            caller_type, max_overlap=cfg.max_seam_overlap
        )
        self._out: collections.deque[ChunkT] = collections.deque()
        self._response: httpx.Response | None = None
        self._body: AsyncIterator[bytes] | None = None
        self._framer: Framer = NdjsonFramer(cfg.max_line_bytes)
        self._decoder: Decoder = ChunkDecoder(GenerateChunk)
        self._plan: AttemptPlan | None = None
        self._replica: Replica | None = None
        self._failed_replica: Replica | None = None
        self._attempts = 0
        self._retries = 0
        self._failures_in_a_row = 0
        self._free_retry: BaseException | None = None  # the one transparent retry
        self._history: list[AttemptRecord] = []
        self._started_at: float | None = None
        self._deadline = 0.0
        self._first_token_at: float | None = None
        self._ended_at: float | None = None
        self._attempt_first_chunk = True
        self._idle = IdleTimeoutPolicy(
            cap=cfg.idle_timeout,
            floor=cfg.idle_timeout_floor,
            factor=cfg.idle_timeout_factor,
            enabled=cfg.adaptive_idle_timeout,
            warmup_timeout=cfg.idle_timeout_warmup,
        )
        self._last_read = 0.0
        self._waiting_since: float | None = None  # None: not waiting for a record
        self._body_bytes = 0
        self._inflate: Inflater | None = None  # the body's Content-Encoding, undone
        self._max_body_bytes = cfg.max_output_bytes or _NO_LIMIT
        # A server that sends more than twice what was asked (plus slack for servers
        # whose chunk count differs from their token count) ignores the limit.
        limit = planner.token_limit
        self._token_cap = 2 * limit + 16 if limit is not None else _NO_LIMIT
        self._watchdog = StallWatchdog()
        self._closed = False
        self._error: BaseException | None = None

    async def aclose(self) -> None:
        """Stop the stream: cancel the upstream request and release everything."""
        await self._abort()

    async def _open(self) -> None:
        """Open the next attempt, retrying the request/headers phase with tenacity."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(self._should_retry),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._start_attempt()
        except _GiveUp as give_up:
            raise self._give_up_error(give_up.error) from give_up.error.__cause__
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise self._give_up_error(exc) from exc

    async def _start_attempt(self) -> None:
        plan = self._plan
        assert plan is not None
        client = self._client
        replica = client.replicas.pick(
            time.monotonic(), avoid=self._failed_replica, retry=self._attempts > 0
        )
        self._replica = replica
        transparent = False
        self._attempts += 1
        self._asm.begin_attempt(plan)
        self._attempt_first_chunk = True
        self._idle.reset()
        self._waiting_since = None
        self._framer = framing(plan.framing).new_framer(self._cfg.max_line_bytes)
        self._decoder = client.decoder_for(plan)
        self._client.log.debug(
            ATTEMPT,
            stream=self.id,
            attempt=self._attempts,
            endpoint=replica.url,
            path=plan.path,
        )
        request = client.http.build_request(
            "POST",
            replica.url + plan.path,
            content=plan.body,
            headers=_HEADERS.get(plan.framing, _HEADERS["ndjson"]),
            timeout=client.httpx_timeout,
        )
        now = time.monotonic()
        try:
            async with asyncio.timeout(min(self._cfg.first_token_timeout, self._deadline - now)):
                response = await client.http.send(request, stream=True)
                if response.status_code != 200:
                    raise await status_error(response, replica.url)
        except TimeoutError:
            if time.monotonic() >= self._deadline:
                raise _GiveUp(self._deadline_error(None)) from None
            exc: BaseException = StallError(
                "no response headers within first_token_timeout "
                f"({self._cfg.first_token_timeout:.1f}s)",
                waited=time.monotonic() - now,
                endpoint=replica.url,
            )
            self._note_failure(exc, replica)
            raise exc from None
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            transparent = self._transparent(exc)
            if transparent:
                self._attempts -= 1
            self._note_failure(exc, replica, count=not transparent)
            raise
        try:
            self._inflate = inflater_for(response.headers.get("content-encoding"))
        except UnsupportedEncodingError as exc:
            await response.aclose()
            self._note_failure(exc, replica)
            raise
        self._response = response
        self._body = response.stream.__aiter__()  # type: ignore[union-attr]

    # --- failures ------------------------------------------------------------------

    async def _fail(self, exc: BaseException) -> None:
        """The current attempt broke after headers: plan a resume or give up."""
        replica = self._replica
        await self._close_response()
        if self._asm.done:
            return  # the stream completed; what broke afterwards does not matter
        self._note_failure(exc, replica)
        reason = describe(exc)
        self._record(reason)
        if not is_retryable(exc):
            raise self._give_up_error(exc) from exc
        if self._asm.started and not self._cfg.resume:
            raise self._give_up_error(exc) from exc
        released = self._asm.interrupt(
            attempt=self._attempts + 1, reason=reason, endpoint=replica.url if replica else ""
        )
        self._out.extend(released)
        plan = self._planner.next(self._asm.progress())
        if isinstance(plan, Finished):
            self._out.extend(self._asm.finish_locally(plan.done_reason))
            self._finish()
            return
        if isinstance(plan, NotResumable):
            raise self._give_up_error(exc, note=plan.reason) from exc
        if not self._asm.started:
            self._retries += 1
        else:
            self._client.log.info(
                RESUME,
                stream=self.id,
                attempt=self._attempts + 1,
                tokens=self._asm.tokens,
                endpoint=self._endpoint(),
                cause=reason,
                **({"partial": self._asm.text} if self._cfg.log_content else {}),
            )
        self._plan = plan
        # After a break mid-stream the first try is immediate: a new connection may just work.
        try:
            delay = self._admit_retry(exc, immediate_first=True)
        except StreamError as give_up:
            raise self._give_up_error(give_up) from exc
        if not self._asm.started:  # a retry after headers but before any output
            self._client.log.info(
                RETRY_WAIT,
                stream=self.id,
                attempt=self._attempts,
                wait=round(delay, 3),
                endpoint=self._endpoint(),
                cause=repr(exc),
            )
        if delay:
            await asyncio.sleep(delay)

    def _admit_retry(self, exc: BaseException, *, immediate_first: bool = False) -> float:
        """The one retry policy of both phases: may another attempt follow ``exc``, and
        after how long? Raises the give-up error when the replicas' retry budgets, the
        attempts or the deadline say no."""
        if self._transparent(exc):
            return 0.0  # never processed, the first time: costs no attempt and no wait
        if not self._client.replicas.can_retry():
            raise self._budget_error(exc) from exc
        if self._attempts >= self._cfg.max_attempts:
            raise AttemptsExhausted(
                f"gave up after {self._attempts} attempts; last cause: {describe(exc)}",
                endpoint=self._endpoint(),
                attempts=self._attempts,
            ) from exc
        failures = self._failures_in_a_row - (1 if immediate_first else 0)
        cfg = self._cfg
        delay = backoff_delay(failures, cfg.backoff_initial, cfg.backoff_max, self._client.rng)
        if isinstance(exc, HTTPStatusError) and exc.retry_after is not None:
            if exc.retry_after > cfg.retry_after_max:
                raise HTTPStatusError(
                    exc.status_code,
                    exc.body,
                    endpoint=exc.endpoint,
                    content_type=exc.content_type,
                    note=f"Retry-After {exc.retry_after:.0f}s exceeds "
                    f"retry_after_max={cfg.retry_after_max:.0f}s",
                ) from exc
            delay = max(delay, exc.retry_after)
        if time.monotonic() + delay >= self._deadline:
            raise self._deadline_error(exc) from exc
        return delay

    def _note_failure(
        self, exc: BaseException, replica: Replica | None, *, count: bool = True
    ) -> None:
        if self._cfg.log_content and isinstance(exc, StreamError):
            exc.reveal_content()  # opted in: messages (and log events) may quote content
        if not count or isinstance(exc, asyncio.CancelledError):
            return
        self._failures_in_a_row += 1
        first_report = _first_report(exc)
        if self._attempt_first_chunk and replica is not None and first_report:
            replica.budget.on_failure()
        if replica is not None and blames_replica(exc):
            self._failed_replica = replica
            if first_report and self._client.replicas.on_failure(replica, time.monotonic()):
                self._client.log.warning(
                    REPLICA_EJECTED,
                    endpoint=replica.url,
                    readmit_after=self._cfg.replica_readmit_after,
                    cause=repr(exc),
                )

    def _transparent(self, exc: BaseException) -> bool:
        """A free, immediate retry (gRPC's transparent retry): the server never processed
        the request, and this stream has not had its one yet (nor the transport, for
        this request). A repeat is an ordinary failure: counted, backed off, charged to
        the retry budget, so a server that refuses everything gets no request storm."""
        if exc is self._free_retry:
            return True
        if not is_transparent(exc):
            return False
        if self._free_retry is not None:
            note_transparent_retries(exc, FREE_TRANSPARENT_RETRIES)  # spent: ordinary now
            return False
        self._free_retry = exc
        return True

    # tenacity hooks (request/headers phase): the decisions are _admit_retry's

    def _should_retry(self, exc: BaseException) -> bool:
        return is_retryable(exc)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return 0.0
        try:
            delay = self._admit_retry(exc)
        except StreamError as give_up:
            raise _GiveUp(give_up) from exc
        if not self._transparent(exc):
            self._retries += 1
        return delay

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self._client.log.info(
            RETRY_WAIT,
            stream=self.id,
            attempt=self._attempts,
            wait=round(wait, 3),
            endpoint=self._endpoint(),
            cause=repr(exc),
        )

    # --- ending --------------------------------------------------------------------

    def _give_up_error(self, exc: BaseException, note: str = "") -> BaseException:
        error = give_up_error(
            exc,
            attempts=self._attempts,
            max_attempts=self._cfg.max_attempts,
            endpoint=self._endpoint(),
            note=note,
        )
        if isinstance(exc, asyncio.CancelledError):
            return error
        self._error = error
        self._client.log.warning(
            GIVE_UP,
            stream=self.id,
            attempts=self._attempts,
            endpoint=self._endpoint(),
            cause=repr(exc),
            error=type(error).__name__,
        )
        return error

    def _budget_error(self, exc: BaseException) -> StreamError:
        return budget_error(exc, attempts=self._attempts, endpoint=self._endpoint())

    def _deadline_error(self, exc: BaseException | None) -> StreamError:
        return deadline_error(
            exc,
            total_timeout=self._cfg.total_timeout,
            attempts=self._attempts,
            endpoint=self._endpoint(),
        )

    def _record(self, outcome: str) -> None:
        plan = self._plan
        self._history.append(
            AttemptRecord(
                number=self._attempts,
                endpoint=self._replica.url if self._replica else "",
                path=plan.path if plan else "",
                tokens=self._asm.attempt_tokens,
                outcome=outcome,
            )
        )

    def _endpoint(self) -> str | None:
        return self._replica.url if self._replica is not None else None

    def _finish(self) -> None:
        """Mark the end; the caller of ``_deliver`` closes the response."""
        self._closed = True
        self._watchdog.close()
        self._ended_at = time.monotonic()
        self._client.forget(self)

    async def _close_response(self) -> None:
        response, self._response, self._body = self._response, None, None
        if response is not None:
            with contextlib.suppress(Exception):
                await response.aclose()

    async def _abort(self) -> None:
        if self._closed and self._response is None:
            return
        self._closed = True
        if self._ended_at is None:
            self._ended_at = time.monotonic()
        await self._close_response()
        self._watchdog.close()
        self._client.forget(self)


def _first_report(exc: BaseException) -> bool:
    """Whether this failure event is counted for the first time.

    A connection that was up and then dropped (or sent GOAWAY) fails every
    stream multiplexed on it with the same exception object: one event, not N.
    Charging the retry budget (and the replica's failure count) N times would
    turn one reset by a load balancer into "the backend is down" and fail
    healthy retries fast. A failed *connect* is what a down backend looks like,
    so each stream's attempt to reach it is still counted.
    """
    if not isinstance(exc, ConnectionLostError | GoAwayError):
        return True
    if exc.__dict__.get("_resilient_counted"):
        return False
    exc.__dict__["_resilient_counted"] = True
    return True
