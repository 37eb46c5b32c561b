"""Anthropic's Messages API: ``POST /v1/messages`` with ``stream: true``, SSE bodies
with ``event:`` names.

``types.py`` (the request and the events), ``framing.py`` (SSE records into chunks),
``planner.py`` (the request of each attempt: an assistant prefill), ``adapters.py``
(how the resume machinery reads the chunks), ``encoder.py`` (chunks back into SSE
events).
"""
