"""structlog setup and the event names the library emits.

One event per attempt, retry wait, resume, give-up or replica change; never one
per chunk. Prompts and outputs are never logged unless
``StreamConfig.log_content`` is set, and Authorization headers never are.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Event names (the ``event`` key of each log record).
ATTEMPT = "stream.attempt"
RETRY_WAIT = "stream.retry_wait"
RESUME = "stream.resume"
DIVERGED = "stream.diverged"
GIVE_UP = "stream.give_up"
REPLICA_EJECTED = "replica.ejected"

_REDACTED = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def redact_headers(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask credentials in a ``headers`` mapping."""
    headers = event.get("headers")
    if isinstance(headers, dict):
        event["headers"] = {
            k: ("[redacted]" if k.lower() in _REDACTED else v) for k, v in headers.items()
        }
    return event


class EventLogger:
    """The logger a client emits its events on.

    It filters by level itself (``StreamConfig.log_level``: ``info`` gives
    retries, resumes and give-ups; ``debug`` adds every attempt). Where an
    event goes is decided when it is emitted (events are rare, never per
    chunk): to structlog if the application configured structlog, otherwise
    to the stdlib ``logging`` logger ``resilient_stream``, so a service that
    configured nothing does not get library lines on its stdout.
    """

    __slots__ = ("_level", "_stdlib", "_structlog")

    def __init__(self, level: str) -> None:
        self._level = logging.getLevelNamesMapping()[level.upper()]
        self._structlog: Any = structlog.get_logger("resilient_stream")
        self._stdlib = logging.getLogger("resilient_stream")

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if level < self._level:
            return
        if structlog.is_configured():
            self._structlog.log(level, event, **fields)
        elif self._stdlib.isEnabledFor(level):
            redact_headers(None, "", fields)
            text = " ".join(f"{k}={v!r}" for k, v in fields.items())
            self._stdlib.log(level, "%s %s", event, text)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


def library_logger(level: str) -> EventLogger:
    """A filtering event logger (see :class:`EventLogger`)."""
    return EventLogger(level)


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Configure structlog for applications and the CLI (libraries should not call this)."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            redact_headers,
            structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
