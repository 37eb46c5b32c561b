"""Adaptive buffering (sans-I/O): sizing decisions that follow measured throughput."""

from .stall import IdleTimeoutPolicy

__all__ = ["IdleTimeoutPolicy"]
