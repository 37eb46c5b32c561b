"""Ollama's wire format: ``/api/generate`` and ``/api/chat``, NDJSON bodies.

``types.py`` (requests and chunks), ``framing.py`` (lines into chunks),
``planner.py`` (the request of each attempt), ``adapters.py`` (how the resume
machinery reads the chunks), ``encoder.py`` (chunks back into NDJSON lines).
"""
