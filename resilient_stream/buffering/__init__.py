"""Adaptive buffering (sans-I/O): sizing decisions that follow measured throughput."""

from .bdp import BdpEstimator
from .consumer import ConsumerBudget
from .sizing import WindowSizing
from .stall import IdleTimeoutPolicy

__all__ = ["BdpEstimator", "ConsumerBudget", "IdleTimeoutPolicy", "WindowSizing"]
