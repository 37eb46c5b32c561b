"""Docs that are generated from code must be current."""

from __future__ import annotations

from pathlib import Path

from resilient_stream.config import StreamConfig
from resilient_stream.config_reference import field_docs, render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_config_knob_is_documented() -> None:
    docs = field_docs()
    missing = [f for f in StreamConfig.__struct_fields__ if not docs.get(f)]
    assert missing == []


def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == render(), (
        "run: python -m resilient_stream.config_reference > docs/configuration.md"
    )
