"""The OpenAI-compatible wire format: ``/v1/chat/completions`` and ``/v1/completions``
with ``stream: true``, SSE bodies.

``types.py`` (requests and chunks), ``framing.py`` (SSE records into chunks),
``planner.py`` (the request of each attempt, per server flavor), ``adapters.py``
(how the resume machinery reads the chunks), ``encoder.py`` (chunks back into
SSE events).
"""
