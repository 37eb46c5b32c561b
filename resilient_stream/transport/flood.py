"""Flood limits for what the server sends unasked (sans-I/O).

Every PING and SETTINGS frame from the server makes us write an ACK; PRIORITY,
extension frames, empty DATA frames without END_STREAM and 1xx HEADERS blocks
make us work without bringing the response any closer. A server (or anything in
between) can send them without limit: one such peer got 718k PING ACKs out of a
client in 6 s. nginx's HTTP/2 upstream module gives up on an upstream after 1000
PINGs it could not answer yet ("upstream sent too many ping frames"); Go's
x/net/http2 server closes a connection with ENHANCE_YOUR_CALM when more than
10,000 control frames wait in its write queue; nginx's server side counts frames
against the payload they carried ("http2 flood detected").

A client's write queue rarely backs up (the flood is answered as fast as it
comes), so this budget counts the frames themselves: a token bucket of
:data:`BURST` unsolicited frames, refilled at :data:`RATE` per second and by
:data:`PER_STREAM` for every stream we open (a server may PING once per request
it receives, as gRPC's BDP estimator does). ACKs of our own PINGs (keepalive,
BDP probes) and SETTINGS are answers, not unsolicited frames, and cost nothing.
The DATA fast path is not touched at all: only frames that leave it are counted.
A keepalive PING every second, or a SETTINGS update now and then, never comes
close; past the budget the connection is closed with GOAWAY(ENHANCE_YOUR_CALM)
and its streams fail with :class:`~resilient_stream.errors.FloodError`
(retryable, on a new connection).
"""

from __future__ import annotations

#: Unsolicited control frames a connection may receive in a burst.
BURST = 1000
#: Refill per second (a keepalive PING every 0.1 s forever stays within it).
RATE = 10.0
#: Refill per stream we open.
PER_STREAM = 2

#: Frame type names for messages.
FRAME_NAMES = {
    0x0: "empty DATA",
    0x1: "1xx HEADERS",
    0x2: "PRIORITY",
    0x4: "SETTINGS",
    0x6: "PING",
}


class ControlFrameBudget:
    """Token bucket of unsolicited control frames for one connection."""

    __slots__ = ("_at", "allowance", "burst", "charged", "per_stream", "rate")

    def __init__(
        self,
        *,
        burst: int = BURST,
        rate: float = RATE,
        per_stream: int = PER_STREAM,
        now: float = 0.0,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.per_stream = per_stream
        self.allowance = float(burst)
        #: Unsolicited frames received so far (for messages and stats).
        self.charged = 0
        self._at = now

    def charge(self, now: float) -> bool:
        """One unsolicited frame arrived at ``now``. True: over budget (a flood)."""
        self.charged += 1
        allowance = self.allowance + (now - self._at) * self.rate
        self._at = now
        if allowance > self.burst:
            allowance = self.burst
        allowance -= 1.0
        self.allowance = allowance
        return allowance < 0.0

    def stream_opened(self) -> None:
        """We opened a stream: the server may answer it with a control frame or two."""
        allowance = self.allowance + self.per_stream
        self.allowance = allowance if allowance < self.burst else float(self.burst)


def frame_name(ftype: int) -> str:
    return FRAME_NAMES.get(ftype, f"frame type 0x{ftype:x}")
