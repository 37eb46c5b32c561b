"""What ``resilient-stream generate`` / ``chat`` tell a person on stderr: a line per
retry wait (attempt, cause in a few words, wait) rendered from the library's own
structlog events, and the error a stream ended with as a line or two, with a hint
when nothing answered at the URL.

Only the CLI routes events here (:func:`events_to`, for the duration of one run);
a library user's events go wherever their application's logging sends them.
"""

from __future__ import annotations

import ast
import contextlib
import re
import socket
import sys
from collections.abc import Iterator, MutableMapping
from typing import IO, Any, NoReturn, Protocol

import httpx
import structlog

from ..errors import HTTPStatusError, StreamError
from ..logging import GIVE_UP, REPLICA_EJECTED, RESUME, RETRY_WAIT, redact_headers


class Notes(Protocol):
    def note(self, line: str) -> None:
        """Write ``line`` on stderr, on a line of its own."""


def isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


@contextlib.contextmanager
def events_to(render: Any) -> Iterator[None]:
    """Route the library's structlog events to ``render`` for the duration, then restore
    structlog's configuration. Only the CLI does this: a library user's events go where
    their application's logging sends them."""
    saved = structlog.get_config() if structlog.is_configured() else None
    structlog.configure(
        processors=[redact_headers, render],
        wrapper_class=structlog.make_filtering_bound_logger(0),  # the client filters
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        if saved is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**saved)


class Progress:
    """A structlog processor that turns the library's events into one line each for a
    person (``attempt 1 of 8 failed: connection refused; retrying in 100 ms``) and drops
    them. ``stream.give_up`` is left to the error line that follows it."""

    def __init__(self, printer: Notes, max_attempts: int, *, verbose: bool) -> None:
        self.printer = printer
        self.max_attempts = max_attempts
        self.verbose = verbose
        self.last_attempt: object = None

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> NoReturn:
        line = self.line(dict(event))
        if line:
            self.printer.note(line)
        raise structlog.DropEvent

    def line(self, event: dict[str, Any]) -> str | None:
        name = event.pop("event", "")
        cause = short_cause(str(event.get("cause", "")))
        if name == RETRY_WAIT:
            attempt = event.get("attempt")
            if attempt == self.last_attempt and not self.verbose:
                return None  # a transparent retry (never processed) of the same attempt
            self.last_attempt = attempt
            return (
                f"attempt {attempt} of {self.max_attempts} failed: {cause}; "
                f"retrying {_after(float(event.get('wait') or 0.0))}"
            )
        if not self.verbose:
            return None
        if name == RESUME:
            return (
                f"stream broke after {event.get('tokens')} tokens: {cause}; resuming "
                f"(attempt {event.get('attempt')} of {self.max_attempts})"
            )
        if name == REPLICA_EJECTED:
            return (
                f"{event.get('endpoint')} set aside for {event.get('readmit_after')}s "
                f"after failing: {cause}"
            )
        if name == GIVE_UP:
            return None
        event.pop("level", None)
        return " ".join([str(name), *(f"{k}={v}" for k, v in event.items())])


def _after(wait: float) -> str:
    if wait <= 0:
        return "at once"
    return f"in {wait * 1000:.0f} ms" if wait < 1 else f"in {wait:.1f}s"


#: What a failure is called in a retry line, by exception type (the library's and
#: httpx's); refined by :func:`short_cause` from the message.
_CAUSE_WORDS = {
    "ConnectError": "cannot connect",
    "ConnectTimeout": "connecting timed out",
    "PoolTimeout": "no free connection",
    "ConnectionLostError": "connection lost",
    "RemoteProtocolError": "connection lost",
    "ReadError": "connection lost",
    "ReadTimeout": "timed out",
    "StreamResetError": "stream reset by the server",
    "RefusedStreamError": "stream refused by the server",
    "FloodError": "the server flooded the connection with control frames",
    "GoAwayError": "server closing the connection (GOAWAY)",
    "StallError": "no data (stalled)",
    "TruncatedStreamError": "answer cut short",
    "MalformedChunkError": "not a valid stream chunk",
    "ProtocolError": "not a valid stream",
    "ServerReportedError": "the server reported an error",
    "HTTPStatusError": "HTTP error",
}
_REFUSED = re.compile(
    r"Errno 111\b|Errno 61\b|WinError 10061|connection refused|connect call failed|"
    r"all connection attempts failed",
    re.IGNORECASE,
)
_NO_SUCH_HOST = re.compile(
    r"name or service not known|nodename nor servname|name resolution|getaddrinfo failed|"
    r"no address associated|Errno -[235]\b|Errno 1100[14]\b",
    re.IGNORECASE,
)
_CAUSE_SYNTAX = re.compile(r"([A-Za-z_][\w.]*)(?:\((.*)\)|: (.*))?", re.DOTALL)


def short_cause(text: str) -> str:
    """``ConnectError("cannot connect: [Errno 111] ...")`` (a repr) or
    ``StallError: no data ...`` (``Type: message``) -> a few words."""
    text = text.strip()
    match = _CAUSE_SYNTAX.fullmatch(text)
    name, message = "", text
    if match:
        name, message = match.group(1), match.group(2) or match.group(3) or ""
        if match.group(2):
            with contextlib.suppress(ValueError, SyntaxError):
                message = str(ast.literal_eval(message))  # the repr's quoted argument
    name = name.rsplit(".", 1)[-1]
    if _NO_SUCH_HOST.search(message):
        return "host name not found"
    if _REFUSED.search(message):
        return "connection refused"
    if name == "HTTPStatusError":
        status = re.match(r"HTTP (\d{3})", message)
        return f"HTTP {status.group(1)}" if status else _CAUSE_WORDS[name]
    if "HTML" in message or "<!doctype" in message.lower() or "<html" in message.lower():
        return "an HTML page, not the API"
    if name in _CAUSE_WORDS:
        return _CAUSE_WORDS[name]
    words = one_line(message or text, limit=80)
    return f"{name}: {words}" if name and message else words


def error_lines(exc: BaseException, url: str) -> list[str]:
    """How the CLI reports the error a stream ended with: one line (whitespace and
    newlines of a quoted page collapsed, the middle of a very long message elided),
    plus a ``hint:`` line when nothing answered at ``url``."""
    lines = [f"error: {one_line(str(exc))}"]
    said = _server_said(exc)
    if said:
        lines.append(f"server said: {one_line(said, limit=300)}")
    hint = _hint(exc, getattr(exc, "endpoint", None) or url)
    if hint:
        lines.append(f"hint: {hint}")
    return lines


def _server_said(exc: BaseException) -> str | None:
    """The server's error text: the library keeps it out of messages (it may echo the
    prompt), but at a terminal it is the user's own request and the useful part."""
    for cause in _chain(exc):
        if isinstance(cause, HTTPStatusError) and cause.body.strip():
            media = (cause.content_type or "").split(";")[0].strip().lower()
            return None if media in ("text/html", "application/xhtml+xml") else cause.body
    return None


def _hint(exc: BaseException, url: str) -> str | None:
    for cause in _chain(exc):
        text = cause.message if isinstance(cause, StreamError) else str(cause)
        if isinstance(cause, socket.gaierror) or (
            isinstance(cause, httpx.ConnectError) and _NO_SUCH_HOST.search(text)
        ):
            return f"is the host name in {url} right?"
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, httpx.ConnectError) and _REFUSED.search(text)
        ):
            return f"is a server running at {url}?"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cause = todo.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        todo.extend(c for c in (cause.__cause__, cause.__context__) if c is not None)


def one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    head, tail = limit * 2 // 3, limit // 3
    return f"{flat[:head].rstrip()} [...] {flat[-tail:].lstrip()}"
