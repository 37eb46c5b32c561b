"""The chaos suite runner: scenarios (TOML) run through the chaos proxy against the
reference server, every stream checked against an unbroken baseline."""

from .report import Report
from .runner import run_scenario
from .scenario import Scenario, load_scenario

__all__ = ["Report", "Scenario", "load_scenario", "run_scenario"]
