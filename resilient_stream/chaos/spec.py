"""Parse toxic specs: the compact CLI form, JSON, or a mapping in toxiproxy's shape.

Compact form: ``TYPE[:STREAM][:KEY=VALUE,KEY=VALUE...]``, e.g.
``latency:downstream:latency=100,jitter=10`` or ``reset_stream:probability=0.2``.
``STREAM`` is ``upstream``/``downstream`` (or ``up``/``down``; default
downstream). The keys ``name`` and ``toxicity`` set the toxic's name and
toxicity; every other key is an attribute. Values are read as int, then
float, then true/false, else kept as text. A spec starting with ``{`` is
JSON in toxiproxy's toxic shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .toxic import InvalidToxicError, ToxicSpec, normalized, toxic_class

_STREAMS = {
    "upstream": "upstream",
    "up": "upstream",
    "downstream": "downstream",
    "down": "downstream",
}


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text


def parse_compact(text: str) -> ToxicSpec:
    text = text.strip()
    if text.startswith("{"):
        try:
            return msgspec.json.decode(text, type=ToxicSpec)
        except msgspec.DecodeError as exc:
            raise InvalidToxicError(f"bad toxic JSON {text!r}: {exc}") from None
    parts = text.split(":", 2)
    ttype = parts[0]
    if not ttype:
        raise InvalidToxicError(f"bad toxic spec {text!r}: missing type")
    stream = "downstream"
    rest = parts[1:]
    if rest and "=" not in rest[0]:
        stream_text = rest.pop(0)
        if stream_text not in _STREAMS:
            raise InvalidToxicError(f"bad toxic spec {text!r}: unknown stream {stream_text!r}")
        stream = _STREAMS[stream_text]
    attributes: dict[str, Any] = {}
    name = ""
    toxicity = 1.0
    body = ":".join(rest)
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise InvalidToxicError(f"bad toxic spec {text!r}: expected KEY=VALUE, got {item!r}")
        if key == "name":
            name = val
        elif key == "toxicity":
            try:
                toxicity = float(val)
            except ValueError:
                raise InvalidToxicError(f"bad toxicity {val!r} in {text!r}") from None
        else:
            attributes[key] = _value(val)
    return ToxicSpec(
        type=ttype,
        name=name,
        stream=stream,  # type: ignore[arg-type]
        toxicity=toxicity,
        attributes=attributes,
    )


def to_spec(value: ToxicSpec | str | Mapping[str, Any]) -> ToxicSpec:
    """Accept any of the spec forms; validate it and fill in default attributes."""
    if isinstance(value, ToxicSpec):
        spec = value
    elif isinstance(value, str):
        spec = parse_compact(value)
    else:
        try:
            spec = msgspec.convert(dict(value), ToxicSpec)
        except msgspec.ValidationError as exc:
            raise InvalidToxicError(f"bad toxic {dict(value)!r}: {exc}") from None
    return normalized(spec)


def known_attributes(type_name: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes a toxic of this type has, without the others.

    toxiproxy's REST API decodes a toxic's attributes into its Go struct, which
    ignores unknown keys; the REST API does the same through this. The CLI and
    Python keep refusing unknown keys (a typo there is an error that names it).
    Raises :class:`InvalidToxicError` for an unknown type.
    """
    fields = {f.encode_name for f in msgspec.structs.fields(toxic_class(type_name).attributes_type)}
    return {k: v for k, v in attributes.items() if k in fields}


def format_compact(spec: ToxicSpec) -> str:
    """The compact form of a spec (round-trips through :func:`parse_compact`)."""
    items = [f"{k}={v}" for k, v in spec.attributes.items()]
    if spec.name != f"{spec.type}_{spec.stream}":
        items.insert(0, f"name={spec.name}")
    if spec.toxicity != 1.0:
        items.insert(0, f"toxicity={spec.toxicity}")
    return f"{spec.type}:{spec.stream}" + (":" + ",".join(items) if items else "")
