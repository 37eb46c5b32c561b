"""The HTTP/2 multiplexed httpx transport (asyncio + h2).

``MultiplexedTransport`` is an ``httpx.AsyncBaseTransport``; see
:mod:`resilient_stream.transport.multiplexed` and docs/transport.md.
"""

from .multiplexed import MultiplexedTransport, TransportStats
from .windows import ReceiveWindow

__all__ = ["MultiplexedTransport", "ReceiveWindow", "TransportStats"]
