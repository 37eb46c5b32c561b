"""h2 for one client connection: its settings, its local SETTINGS, and how it starts.

:class:`ConnectionSettings` are the knobs (resolved once per transport);
:func:`new_h2_connection` builds the ``h2`` state machine, a
:class:`DrainingH2Connection` that keeps the streams of a graceful GOAWAY alive
(python-hyper/h2#1181); :func:`server_preface_verdict` tells an HTTP/2 server
from an HTTP/1 one by its first bytes. Also the transport's log event names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.settings

from ..h2wire import FLAG_ACK, INITIAL_MAX_FRAME_SIZE, SETTINGS
from .deadlines import RESOLUTION

if TYPE_CHECKING:
    from ..buffering.consumer import ConsumerBudget
    from ..buffering.sizing import WindowSizing

#: Log event names of the transport (one per connection event, never per chunk).
CONNECTION_OPENED = "connection.opened"
CONNECTION_CLOSED = "connection.closed"
CONNECTION_GOAWAY = "connection.goaway"
CONNECTION_DEAD = "connection.dead"
CONNECTION_FLOOD = "connection.flood"
ORIGIN_HTTP1_FALLBACK = "origin.http1_fallback"
STREAM_TRANSPARENT_RETRY = "stream.transparent_retry"

_CLOSED_STATE = h2.connection.ConnectionState.CLOSED
_OPEN_STATE = h2.connection.ConnectionState.CLIENT_OPEN


class NotHttp2Error(Exception):
    """The server answered the h2c preface in HTTP/1.x: use HTTP/1.1 for this origin."""


def server_preface_verdict(head: bytes) -> bool | None:
    """Do the first bytes from the server start an HTTP/2 server preface?

    RFC 9113 section 3.4: the server's first frame is SETTINGS (type 0x4) on stream 0,
    without ACK, its length a multiple of 6 and within the initial frame size. Anything
    else (``HTTP/1.1 505 ...``, or the bare ``<!DOCTYPE HTML>`` error page that servers
    built on Python's http.server send for an ``HTTP/2.0`` request line) is not HTTP/2.
    ``None``: fewer than 9 bytes, all plausible so far. Decided from the first byte for
    any text answer (a length of 64 KiB or more).
    """
    n = len(head)
    if n >= 3:
        length = int.from_bytes(head[:3], "big")
        if length > INITIAL_MAX_FRAME_SIZE or length % 6:
            return False
    elif n and head[0]:
        return False
    if n >= 4 and head[3] != SETTINGS:
        return False
    if n >= 5 and head[4] & FLAG_ACK:
        return False
    if n < 9:
        return None
    return not int.from_bytes(head[5:9], "big") & 0x7FFFFFFF


class DrainingH2Connection(h2.connection.H2Connection):
    """``h2`` that keeps processing existing streams after a graceful GOAWAY (h2#1181).

    h2 moves its state machine to CLOSED on any GOAWAY, after which every frame of
    the streams the server promised to finish is a protocol error. For GOAWAY with
    NO_ERROR we put it back to open; the pool never starts a new stream here.
    """

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == 0 and self.state_machine.state is _CLOSED_STATE:
            self.state_machine.state = _OPEN_STATE
        return result


class ConnectionSettings:
    """The knobs one connection needs (resolved once per transport)."""

    __slots__ = (
        "bdp_probe",
        "budget",
        "connection_window",
        "deadline_resolution",
        "max_streams",
        "ping_interval",
        "ping_timeout",
        "sizing",
        "stream_window",
    )

    def __init__(
        self,
        *,
        max_streams: int,
        stream_window: int,
        connection_window: int,
        ping_interval: float,
        ping_timeout: float,
        sizing: WindowSizing | None = None,
        budget: ConsumerBudget | None = None,
        bdp_probe: bool = True,
        deadline_resolution: float = RESOLUTION,
    ) -> None:
        self.deadline_resolution = deadline_resolution
        self.sizing = sizing  # adaptive windows (None: fixed)
        self.budget = budget
        self.bdp_probe = bdp_probe
        self.max_streams = max_streams
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout


def new_h2_connection(settings: ConnectionSettings) -> DrainingH2Connection:
    """A client-side h2 connection with our local SETTINGS.

    Outbound headers come from :func:`.headers.request_headers` (already checked), so h2's
    generic outbound validation (~10 us per request) is off; inbound (server)
    headers stay fully validated.
    """
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False
    )
    conn = DrainingH2Connection(config=config)
    conn.local_settings = h2.settings.Settings(
        client=True,
        initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65_536,
        },
    )
    return conn
