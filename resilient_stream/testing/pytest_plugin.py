"""Kept for ``pytest_plugins = ["resilient_stream.testing.pytest_plugin"]`` users.

The fixtures live in :mod:`resilient_stream.pytest_plugin`, which the package
registers as a ``pytest11`` plugin (loaded automatically); this module
re-exports its ``reference_server`` so both spellings give the same fixture.
"""

from __future__ import annotations

from resilient_stream.pytest_plugin import reference_server

__all__ = ["reference_server"]
