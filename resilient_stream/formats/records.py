"""JSON records (NDJSON lines, SSE ``data`` payloads) into typed values, sans-I/O.

Shared by the wire formats' decoders (``formats/ollama/framing.py``,
``formats/openai/framing.py``): the records of one read are decoded in a
single msgspec call, and only a failure is looked at record by record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from ..errors import MalformedChunkError

T = TypeVar("T")


class RecordDecoder(Generic[T]):
    """JSON records (NDJSON lines, SSE data payloads) into typed values, one read at a time.

    The records of a read are decoded in one msgspec call (joined into a JSON
    array); only when that fails are they decoded one by one, to name the bad
    record in a :class:`MalformedChunkError` whose ``chunks_before`` (made by
    ``before`` from the values decoded ahead of it) keeps what already arrived.
    """

    __slots__ = ("_array", "_one", "one")

    def __init__(self, value_type: type[T]) -> None:
        self._one: msgspec.json.Decoder[T] = msgspec.json.Decoder(value_type)
        self._array = msgspec.json.Decoder(list[value_type])  # type: ignore[valid-type]
        #: One record's value, for a caller's own one-record fast path (raises
        #: ``msgspec.DecodeError``: :meth:`decode` names what is wrong).
        self.one: Callable[[bytes], T] = self._one.decode

    def decode(
        self, records: list[bytes], before: Callable[[list[T]], list[Any]] = list
    ) -> list[T]:
        if len(records) == 1:  # the common case on a paced stream: one token per read
            try:
                return [self._one.decode(records[0])]
            except msgspec.DecodeError:
                pass
        elif records:
            try:
                values: list[T] = self._array.decode(b"[" + b",".join(records) + b"]")
            except msgspec.DecodeError:
                pass
            else:
                if len(values) == len(records):
                    return values  # else a record held several values: find it below
        else:
            return []
        return self._one_by_one(records, before)

    def _one_by_one(self, records: list[bytes], before: Callable[[list[T]], list[Any]]) -> list[T]:
        out: list[T] = []
        for record in records:
            try:
                out.append(self._one.decode(record))
            except msgspec.ValidationError as exc:
                err = MalformedChunkError(f"unexpected shape ({exc})", record)
                err.chunks_before = before(out)
                raise err from exc
            except msgspec.DecodeError as exc:
                start = record.lstrip()[:1]
                reason = f"bad JSON ({exc})" if start == b"{" else "not JSON"
                if start == b"<":
                    reason = "an HTML page, not JSON (a proxy or gateway error page?)"
                err = MalformedChunkError(reason, record)
                err.chunks_before = before(out)
                raise err from exc
        return out
