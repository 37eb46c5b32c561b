"""Resume planning and seam stitching (sans-I/O)."""

from .assembler import StreamAssembler
from .planner import AttemptPlan, Finished, NotResumable, Progress, ResumePlanner
from .seam import SeamStitcher

__all__ = [
    "AttemptPlan",
    "Finished",
    "NotResumable",
    "Progress",
    "ResumePlanner",
    "SeamStitcher",
    "StreamAssembler",
]
