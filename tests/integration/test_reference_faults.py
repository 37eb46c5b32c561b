"""What each reference-server fault kind does, decided once (sans-I/O, no sockets).

The h1 and h2 edges only carry out the steps that ``refserver.injection``
decides; their behaviour on the wire is tested in test_reference_server.py.
"""

from __future__ import annotations

import msgspec
import pytest

from resilient_stream.refserver import Fault, FaultSchedule, ServerSettings, ServerStats
from resilient_stream.refserver.faults import INTERNAL_ERROR, NO_ERROR
from resilient_stream.refserver.handler import Handler
from resilient_stream.refserver.injection import (
    DropConnection,
    EndBody,
    GoAway,
    Hold,
    ResetStream,
    before_headers,
    next_step,
)
from resilient_stream.refserver.replies import LineStream, Reply

GEN = msgspec.json.encode({"model": "m", "prompt": "hi", "options": {"num_predict": 20}})


def reply(fault: Fault | None, *, stream: bool = True, path: str = "/api/generate") -> Reply:
    plan = FaultSchedule({} if fault is None else {0: fault})
    settings = ServerSettings(faults=plan, stop_probability=0.0)
    if path != "/api/generate":
        return Handler(settings, ServerStats()).handle("GET", path, b"", "h2")
    body = GEN if stream else msgspec.json.encode({**msgspec.json.decode(GEN), "stream": False})
    return Handler(settings, ServerStats()).handle("POST", path, body, "h2")


def lines_at_fault(fault: Fault) -> LineStream:
    lines = reply(fault).stream
    assert lines is not None
    while not lines.fault_due():
        assert not lines.finished
        lines.next_line()
    return lines


def test_connection_and_stream_kinds_are_the_same_step_before_and_during_the_body() -> None:
    cases = [
        (Fault("stall", seconds=0.5), Hold(0.5, ResetStream(INTERNAL_ERROR))),
        (Fault("stall"), Hold(None)),
        (Fault("never_answer"), Hold(None)),
        (Fault("drop_connection"), DropConnection()),
        (Fault("reset_stream"), ResetStream(INTERNAL_ERROR)),
        (Fault("reset_stream", error_code=8), ResetStream(8)),
        (Fault("goaway"), GoAway(NO_ERROR, None)),
        (Fault("goaway", error_code=2, last_stream_id=3), GoAway(2, 3)),
    ]
    for fault, step in cases:
        assert next_step(fault) == step
        assert next_step(fault, lines_at_fault(Fault("truncate", after_tokens=3))) == step


def test_body_kinds_end_the_body_with_what_they_send_last() -> None:
    lines = lines_at_fault(Fault("truncate", after_tokens=3))
    assert next_step(Fault("truncate", after_tokens=3), lines) == EndBody(b"")

    fault = Fault("truncate_line", after_tokens=3)
    lines = lines_at_fault(fault)
    step = next_step(fault, lines, pending=b"0123456789")
    assert step == EndBody(b"01234")
    step = next_step(fault, lines)  # no held-back line: half of the next one
    assert isinstance(step, EndBody) and step.last and not step.last.endswith(b"\n")

    fault = Fault("error_line", after_tokens=3, message="boom")
    step = next_step(fault, lines_at_fault(fault))
    assert step == EndBody(b'{"error":"boom"}\n')


def test_body_kinds_and_status_are_not_edge_steps_before_the_headers() -> None:
    for kind in ("truncate", "truncate_line", "error_line", "status"):
        with pytest.raises(ValueError, match="decided by the handler"):
            next_step(Fault(kind))  # type: ignore[arg-type]


def test_before_headers_picks_what_acts_before_any_header() -> None:
    assert before_headers(reply(Fault("never_answer"))) == Hold(None)
    assert before_headers(reply(Fault("status", status=429))) is None  # the reply is the 429
    assert before_headers(reply(Fault("drop_connection", after_tokens=2))) is None  # mid-stream
    whole = reply(Fault("drop_connection", after_tokens=2), stream=False)
    assert before_headers(whole) == DropConnection()
    assert before_headers(reply(Fault("truncate"), stream=False)) is None


def test_the_handler_turns_body_kinds_on_a_whole_body_into_the_reply() -> None:
    plain = reply(None, path="/api/version")
    short = reply(Fault("truncate"), path="/api/version")
    assert short.promised_length == len(plain.body) and plain.promised_length is None
    assert short.body == plain.body[: len(plain.body) // 2]
    error = reply(Fault("error_line", message="boom"), stream=False)
    assert (error.status, error.body) == (500, b'{"error":"boom"}')
