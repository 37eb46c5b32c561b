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


def library_logger(level: str) -> Any:
    """The logger a client emits its events on.

    It filters by ``level`` itself (``StreamConfig.log_level``: ``info`` gives
    retries, resumes and give-ups; ``debug`` adds every attempt) and otherwise
    uses whatever structlog configuration the application set up, so a service
    that never configured logging does not get a line per stream on stdout.
    """
    return structlog.wrap_logger(
        None,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_name="resilient_stream",
    )


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
