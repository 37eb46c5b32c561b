"""The record of every fault the proxy injected.

A fault plan is what a replay must reproduce, so :meth:`FaultRecord.plan_key`
leaves out the time and keeps what the seed decides.
"""

from __future__ import annotations

import msgspec


class FaultRecord(msgspec.Struct, frozen=True):
    """One injected fault.

    ``offset`` is where the seeded plan said to fire: a DATA byte offset in
    the stream (HTTP/2 stream toxics), a DATA frame count (connection-level
    HTTP/2 toxics), a byte count (limit_data), or -1 when a toxic acts on the
    whole connection from its start (latency, bandwidth, ...). ``actual`` is
    where it did fire (e.g. the stream's bytes forwarded before a reset), which
    can differ from ``offset`` by how the sender cut its frames, so it is not
    part of the plan.
    """

    time: float
    connection: int
    stream_id: int
    kind: str
    toxic: str
    direction: str
    offset: int = -1
    detail: str = ""
    actual: int = -1
    #: The request the fault hit (``"<body sha256 prefix>#<n>"``), when known.
    request: str = ""

    def plan_key(self) -> tuple[str, str, str, str, int, str]:
        """What the seed decides (no ``time``, no ``actual``): equal keys mean the same fault.

        A fault on a known request is named by the request, not by the connection
        index and stream id it happened to get (those follow timing once clients
        resume); other faults by connection index and stream id.
        """
        scope = (
            f"request {self.request}"
            if self.request
            else f"connection {self.connection} stream {self.stream_id}"
        )
        return (
            scope,
            self.kind,
            self.toxic,
            self.direction,
            self.offset,
            self.detail,
        )


class FaultLog:
    """Bounded, append-only list of fault records (old records are kept, new ones counted)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.records: list[FaultRecord] = []
        self.dropped = 0

    def append(self, record: FaultRecord) -> None:
        if len(self.records) < self.limit:
            self.records.append(record)
        else:
            self.dropped += 1

    def clear(self) -> None:
        self.records.clear()
        self.dropped = 0
