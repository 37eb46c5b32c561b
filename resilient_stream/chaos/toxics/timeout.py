"""timeout: drop all data; close the connection after ``timeout`` ms (toxiproxy).

With ``timeout`` 0 the connection is held open, silent, until the toxic goes.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..ops import Close, Data, Eof, Later, Op
from ..toxic import Attributes, Toxic, register_toxic


class TimeoutAttributes(Attributes):
    timeout: Annotated[int, msgspec.Meta(ge=0)] = 0


@register_toxic
class TimeoutToxic(Toxic[TimeoutAttributes]):
    """A stall: nothing gets through; the timer starts when the toxic starts acting."""

    type_name = "timeout"
    attributes_type = TimeoutAttributes
    record_on_activate = True

    def on_open(self) -> list[Op]:
        if self.attrs.timeout > 0:
            return [Later(self.attrs.timeout / 1000.0, [Close()])]
        return []

    def on_data(self, op: Data) -> list[Op]:
        return []

    def on_eof(self, op: Eof) -> list[Op]:
        return [Close()]
