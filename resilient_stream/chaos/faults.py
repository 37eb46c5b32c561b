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

    def plan_key(self) -> tuple[int, int, str, str, str, int, str]:
        """Everything but ``time`` and ``actual``: equal keys mean the same fault."""
        return (
            self.connection,
            self.stream_id,
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
