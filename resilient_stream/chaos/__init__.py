"""The chaos proxy: toxiproxy's TCP toxics plus HTTP/2-aware, per-stream faults.

Seeded and replayable; controlled from Python (:class:`ChaosProxy`), the
``resilient-stream proxy`` command, and a toxiproxy-compatible REST API
(:class:`ApiServer`). See docs/chaos.md.
"""

from __future__ import annotations

from .api import ApiServer, ProxyRegistry
from .fault_log import FaultRecord
from .proxy import ChaosProxy, ProxyInfo, ToxicExistsError, ToxicNotFoundError
from .spec import format_compact, parse_compact
from .toxic import REGISTRY, ChaosError, InvalidToxicError, Toxic, ToxicSpec, register_toxic
from .toxics.bandwidth import BandwidthToxic
from .toxics.cut_data import CutDataToxic
from .toxics.drop_after_data_frames import DropAfterDataFramesToxic
from .toxics.goaway import GoawayToxic
from .toxics.latency import LatencyToxic
from .toxics.limit_data import LimitDataToxic
from .toxics.reset_peer import ResetPeerToxic
from .toxics.reset_stream import ResetStreamToxic
from .toxics.slicer import SlicerToxic
from .toxics.slow_close import SlowCloseToxic
from .toxics.stall_stream import StallStreamToxic
from .toxics.timeout import TimeoutToxic

__all__ = [
    "REGISTRY",
    "ApiServer",
    "BandwidthToxic",
    "ChaosError",
    "ChaosProxy",
    "CutDataToxic",
    "DropAfterDataFramesToxic",
    "FaultRecord",
    "GoawayToxic",
    "InvalidToxicError",
    "LatencyToxic",
    "LimitDataToxic",
    "ProxyInfo",
    "ProxyRegistry",
    "ResetPeerToxic",
    "ResetStreamToxic",
    "SlicerToxic",
    "SlowCloseToxic",
    "StallStreamToxic",
    "TimeoutToxic",
    "Toxic",
    "ToxicExistsError",
    "ToxicNotFoundError",
    "ToxicSpec",
    "format_compact",
    "parse_compact",
    "register_toxic",
]
