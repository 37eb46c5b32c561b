"""Adaptive stall detection (sans-I/O): the idle timeout follows the stream's pace.

A fixed read timeout is wrong for every model but one: 30 s lets a dead stream
on a 50 tokens/s model hang for 30 s, while 1 s kills a healthy 0.5 tokens/s
stream. Here the timeout is ``factor`` times a slowly decaying peak of the
recent gaps between reads, clamped to ``[floor, cap]``:

* the peak (not the mean) makes one slow-but-normal gap raise the bar at once;
* the decay lets the bar come back down after a burst of slowness;
* until ``warmup`` gaps were seen, the bar is ``warmup_timeout`` or ``factor``
  times the gaps seen so far, whichever is longer (the cap when no
  ``warmup_timeout`` is set): a stream that stalls after its second chunk is
  caught within seconds, while a slow-but-healthy stream raises the bar with
  its very first gap.

The first chunk is not a gap: time to first token has its own, longer timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import StreamConfig


class IdleTimeoutPolicy:
    __slots__ = (
        "_cap",
        "_decay",
        "_early",
        "_factor",
        "_floor",
        "_peak",
        "_seen",
        "_warmup",
        "enabled",
    )

    def __init__(
        self,
        *,
        cap: float,
        floor: float = 0.25,
        factor: float = 8.0,
        warmup: int = 8,
        decay: float = 0.99,
        enabled: bool = True,
        warmup_timeout: float | None = None,
    ) -> None:
        self._cap = cap
        self._early = cap if warmup_timeout is None else min(warmup_timeout, cap)
        self._floor = min(floor, cap)
        self._factor = factor
        self._warmup = warmup
        self._decay = decay
        self.enabled = enabled
        self._peak = 0.0
        self._seen = 0

    @classmethod
    def for_config(cls, cfg: StreamConfig) -> IdleTimeoutPolicy:
        """The policy ``cfg``'s ``idle_timeout*`` keys describe (one per stream)."""
        return cls(
            cap=cfg.idle_timeout,
            floor=cfg.idle_timeout_floor,
            factor=cfg.idle_timeout_factor,
            enabled=cfg.adaptive_idle_timeout,
            warmup_timeout=cfg.idle_timeout_warmup,
        )

    def reset(self) -> None:
        """A new attempt: forget the gaps of the previous connection."""
        self._peak = 0.0
        self._seen = 0

    def observe(self, gap: float) -> float:
        """One gap (seconds) between two reads that carried chunks; returns the new
        :attr:`timeout` (the per-record path needs both: one call instead of two).

        Disabled is ``floor == cap`` here, as in :meth:`constants`, and the count of
        gaps stops at ``warmup`` (past it, only ``seen < warmup`` is ever asked)."""
        peak = self._peak * self._decay
        if gap > peak:
            peak = gap
        self._peak = peak
        t = self._factor * peak
        seen = self._seen
        if seen < self._warmup:
            self._seen = seen = seen + 1
            if seen < self._warmup and t < self._early:
                t = self._early
        floor = self._floor if self.enabled else self._cap
        if t < floor:
            return floor
        return t if t < self._cap else self._cap

    def constants(self) -> tuple[float, float, float, float, int, float]:
        """``(factor, decay, floor, cap, warmup, early)`` for a loop that runs
        :meth:`observe`'s arithmetic on locals (a call per record is a measurable cost
        there: ``PassThrough.body``). Disabled: ``floor == cap``, the cap every time."""
        floor = self._cap if not self.enabled else self._floor
        return self._factor, self._decay, floor, self._cap, self._warmup, self._early

    @property
    def timeout(self) -> float:
        if not self.enabled:
            return self._cap
        t = self._factor * self._peak
        if self._seen < self._warmup:
            t = t if t > self._early else self._early
        if t < self._floor:
            return self._floor
        return t if t < self._cap else self._cap
