"""Structured outputs of the reference model: ``format: "json"`` and JSON schemas.

Sans-I/O. A request with a ``format`` gets one JSON document as its content,
streamed a token at a time (``{``, ``"``, ``na``, ``me``, ``": ``, ...) like
any output, so resume tests can cut it anywhere, inside strings and
multi-byte characters too.

The document is a pure function of the context text before it (its *base*):
a blake2b digest of the base seeds the choices (which optional properties,
how many items, which words, numbers, enum members). Continuation: for a
context ``C``, the document starts at the earliest position ``j`` (among the
last :data:`SEARCH_WINDOW` characters, where ``C[j]`` can start the schema's
JSON) such that the document of ``C[:j]`` begins with ``C[j:]``, and the
output is the rest of that document; with no such ``j`` it is a new document
for ``C``. So ``prompt + document[:k]`` (raw generate, completions) and a chat
prefill holding ``document[:k]`` both continue with ``document[k:]``, which is
what a resume layer sends. (A prompt that itself ends with ``{`` is taken as
the opening of the document, as a JSON-constrained model would continue it.)

Schemas: ``type`` (a name or a list) ``object`` (``properties``, ``required``,
``additionalProperties``), ``array`` (``items``, ``prefixItems``,
``minItems``, ``maxItems``), ``string`` (``minLength``, ``maxLength``,
``format`` date-time/date/time/email/uuid/uri), ``integer`` and ``number``
(``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``),
``boolean``, ``null``, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf``, and
local ``$ref`` (``#/$defs/...``, ``#/definitions/...``): what pydantic's
``model_json_schema()`` emits for plain models. Not honoured: ``pattern``,
``multipleOf``, ``uniqueItems``, ``not``, ``if``/``then``, remote ``$ref``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from resilient_stream.refserver import model

#: How far back in the context a document may start (characters); documents stay far
#: below it (see :data:`SOFT_SIZE`), which is what keeps continuation exact.
SEARCH_WINDOW: Final = 16384
#: Past this many characters a document takes the smallest choices the schema allows
#: (no optional properties, ``minItems`` items, short strings) so that it ends.
SOFT_SIZE: Final = 4000
#: Past this nesting depth of the document, the same (recursive ``$ref`` schemas end).
SOFT_DEPTH: Final = 8
#: A document nested deeper than this (a schema that requires infinite recursion)
#: gets ``null`` there and stops being valid.
HARD_DEPTH: Final = 48
#: Schemas nested deeper than this are refused (400).
MAX_SCHEMA_DEPTH: Final = 64

_TYPES: Final = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
_STARTS: Final = {
    "object": "{",
    "array": "[",
    "string": '"',
    "integer": "-0123456789",
    "number": "-0123456789",
    "boolean": "tf",
    "null": "n",
}
_ANY_START: Final = frozenset("".join(_STARTS.values()))
_WORD_POOL: Final = tuple(model._WORDS)
_TEXT_POOL: Final = model._CJK + model._EMOJI
#: JSON escapes a string value may contain (as JSON text; each is one character).
_ESCAPES: Final = ('\\"', "\\n", "\\\\", "\\t")


class FormatError(ValueError):
    """A ``format`` the server refuses (the message is the 400's ``error``)."""


class FormatSpec:
    """A parsed ``format``: ``schema`` is None for ``"json"`` (any JSON object)."""

    __slots__ = ("root", "schema", "starts")

    def __init__(self, schema: dict[str, Any] | None) -> None:
        self.schema = schema
        self.root: dict[str, Any] = schema if schema is not None else {}
        #: The characters the document can start with (set by :func:`parse_format`).
        self.starts: frozenset[str] = frozenset("{")

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow ``$ref`` (local only; checked by :func:`parse_format`)."""
        seen = 0
        while "$ref" in schema and seen < MAX_SCHEMA_DEPTH:
            schema = _pointer(self.root, schema["$ref"])
            seen += 1
        return schema

    def _starts(self, schema: Any, seen: dict[int, frozenset[str]]) -> frozenset[str]:
        """The characters a value of ``schema`` can start with (to skip hopeless cuts).
        A schema met again inside itself (recursion through ``$ref``) counts as "may
        start with anything": a superset is always safe here. ``seen`` memoizes."""
        if not isinstance(schema, dict):
            return _ANY_START
        key = id(schema)
        if key in seen:
            return seen[key]
        seen[key] = _ANY_START  # while it is being computed
        out = self._starts_of(self.resolve(schema), seen)
        seen[key] = out
        return out

    def _starts_of(self, schema: dict[str, Any], seen: dict[int, frozenset[str]]) -> frozenset[str]:
        if "$ref" in schema:  # a cycle of bare $refs
            return _ANY_START
        if "const" in schema:
            return frozenset(msgspec.json.encode(schema["const"]).decode()[:1])
        if isinstance(schema.get("enum"), list):
            return frozenset(msgspec.json.encode(v).decode()[:1] for v in schema["enum"])
        for k in ("anyOf", "oneOf"):
            if isinstance(schema.get(k), list):
                out: frozenset[str] = frozenset()
                for branch in schema[k]:
                    out |= self._starts(branch, seen)
                return out
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            return self._starts(_merge(self, schema), seen)
        types = _types_of(schema)
        if not types:
            return _ANY_START
        return frozenset("".join(_STARTS[t] for t in types))


def parse_format(fmt: Any) -> FormatSpec | None:
    """``format`` of a request -> a spec, or None (absent, ``null``, ``""``).

    Raises :class:`FormatError` with Ollama's messages for what it refuses.
    """
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return FormatSpec(None)
    if not isinstance(fmt, dict):
        raw = msgspec.json.encode(fmt).decode()
        quoted = msgspec.json.encode(raw).decode()  # Go's %q of the raw JSON, near enough
        raise FormatError(
            f'invalid format: {quoted}; expected "json" or a valid JSON Schema object'
        )
    spec = FormatSpec(fmt)
    _check(spec, fmt, 0, set())
    spec.starts = spec._starts(fmt, {})
    return spec


def _check(spec: FormatSpec, schema: Any, depth: int, refs: set[str]) -> None:
    if depth > MAX_SCHEMA_DEPTH:
        raise FormatError("invalid JSON schema in format: nested too deeply")
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise FormatError("invalid JSON schema in format")
    ref = schema.get("$ref")
    if ref is not None:
        if not isinstance(ref, str):
            raise FormatError("invalid JSON schema in format")
        if ref not in refs:
            refs.add(ref)
            _check(spec, _pointer(spec.root, ref), depth + 1, refs)
    t = schema.get("type")
    names = t if isinstance(t, list) else [t] if t is not None else []
    if not all(isinstance(n, str) and n in _TYPES for n in names):
        raise FormatError(f"invalid JSON schema in format: unknown type {t!r}")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        raise FormatError("invalid JSON schema in format: enum must be a non-empty list")
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise FormatError("invalid JSON schema in format: properties must be an object")
        for sub in props.values():
            _check(spec, sub, depth + 1, refs)
    req = schema.get("required")
    if req is not None and not (isinstance(req, list) and all(isinstance(r, str) for r in req)):
        raise FormatError("invalid JSON schema in format: required must be a list of names")
    for key in ("items", "additionalProperties"):
        if key in schema:
            _check(spec, schema[key], depth + 1, refs)
    for key in ("prefixItems", "anyOf", "oneOf", "allOf"):
        if key in schema:
            branches = schema[key]
            if not isinstance(branches, list) or (key != "prefixItems" and not branches):
                raise FormatError(f"invalid JSON schema in format: {key} must be a list")
            for sub in branches:
                _check(spec, sub, depth + 1, refs)
    for key in ("$defs", "definitions"):
        defs = schema.get(key)
        if defs is not None and not isinstance(defs, dict):
            raise FormatError(f"invalid JSON schema in format: {key} must be an object")


def _pointer(root: dict[str, Any], ref: str) -> dict[str, Any]:
    """A local JSON pointer (``#``, ``#/$defs/Name``) into ``root``."""
    if ref != "#" and not ref.startswith("#/"):
        raise FormatError(f"invalid JSON schema in format: only local $ref, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/") if ref != "#" else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise FormatError(f"invalid JSON schema in format: unresolved $ref {ref!r}")
        node = node[part]
    if isinstance(node, bool):
        return {} if node else {"not": {}}
    if not isinstance(node, dict):
        raise FormatError(f"invalid JSON schema in format: $ref {ref!r} is not a schema")
    return node


def _types_of(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type")
    if isinstance(t, list):
        return [x for x in t if x in _TYPES]
    if isinstance(t, str):
        return [t]
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return ["object"]
    if "items" in schema or "prefixItems" in schema:
        return ["array"]
    return []


def _merge(spec: FormatSpec, schema: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """``allOf``: the branches merged shallowly into one schema (properties, required);
    nested ``allOf`` too, to a bounded depth (a cycle through ``$ref`` ends there)."""
    out = {k: v for k, v in schema.items() if k != "allOf"}
    props: dict[str, Any] = dict(out.get("properties") or {})
    required: list[str] = list(out.get("required") or [])
    for branch in schema["allOf"]:
        if not isinstance(branch, dict):
            continue
        b = spec.resolve(branch)
        if "allOf" in b and depth < MAX_SCHEMA_DEPTH:
            b = _merge(spec, b, depth + 1)
        for k, v in b.items():
            if k == "properties" and isinstance(v, dict):
                props.update(v)
            elif k == "required" and isinstance(v, list):
                required.extend(r for r in v if r not in required)
            elif k not in out and k != "allOf":  # nested allOf is merged above, or cut
                out[k] = v
    if props:
        out["properties"] = props
    if required:
        out["required"] = required
    return out


# --- writing a document ---------------------------------------------------------------


def _pieces(text: str, size: int = 4) -> list[str]:
    """Fixed text (keys, enum members) as tokens of up to ``size`` characters."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _Writer:
    """Yields one document's tokens; every choice comes from ``rng.random()`` (the only
    part of ``random`` whose sequence Python promises to keep)."""

    def __init__(self, spec: FormatSpec, seed: bytes) -> None:
        self.spec = spec
        self.rng = random.Random(int.from_bytes(seed, "little"))
        self.size = 0

    def below(self, n: int) -> int:
        return min(n - 1, int(self.rng.random() * n)) if n > 1 else 0

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def small(self, depth: int) -> bool:
        return self.size > SOFT_SIZE or depth > SOFT_DEPTH

    def emit(self, tok: str) -> str:
        self.size += len(tok)
        return tok

    def document(self) -> Iterator[str]:
        if self.spec.schema is None:
            yield from self.any_object(0)
        else:
            yield from self.value(self.spec.schema, 0)

    # values of a schema

    def value(self, schema: Any, depth: int) -> Iterator[str]:
        if depth > HARD_DEPTH or schema is False:
            yield self.emit("null")
            return
        if not isinstance(schema, dict):  # True: anything
            yield from self.any_value(depth)
            return
        spec = self.spec
        schema = spec.resolve(schema)
        if "const" in schema:
            yield from self.literal(schema["const"])
            return
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            yield from self.literal(enum[self.below(len(enum))])
            return
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                yield from self.value(self.branch(branches, depth), depth + 1)
                return
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            yield from self.value(_merge(spec, schema), depth + 1)
            return
        types = _types_of(schema)
        if not types:
            yield from self.any_value(depth)
            return
        t = types[0] if len(types) == 1 or self.small(depth) else types[self.below(len(types))]
        if t == "object":
            yield from self.object(schema, depth)
        elif t == "array":
            yield from self.array(schema, depth)
        elif t == "string":
            yield from self.string(schema)
        elif t == "integer":
            yield self.emit(self.integer(schema))
        elif t == "number":
            yield self.emit(self.number(schema))
        elif t == "boolean":
            yield self.emit("true" if self.chance(0.5) else "false")
        else:
            yield self.emit("null")

    def branch(self, branches: list[Any], depth: int) -> Any:
        if self.small(depth):  # prefer a branch that ends: null, then any scalar
            resolved = [self.spec.resolve(b) if isinstance(b, dict) else b for b in branches]
            for want in (("null",), ("boolean", "integer", "number", "string")):
                for b in resolved:
                    if isinstance(b, dict) and any(t in want for t in _types_of(b)):
                        return b
            return branches[0]
        return branches[self.below(len(branches))]

    def literal(self, v: Any) -> Iterator[str]:
        text = msgspec.json.encode(v).decode()
        if text.startswith('"'):
            yield self.emit('"')
            for p in _pieces(text[1:-1]):
                if p:
                    yield self.emit(p)
            yield self.emit('"')
        else:
            for p in _pieces(text, 6):
                yield self.emit(p)

    def key(self, name: str) -> Iterator[str]:
        yield from self.literal(name)
        yield self.emit(": ")

    def object(self, schema: dict[str, Any], depth: int) -> Iterator[str]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = set(schema.get("required") or ())
        small = self.small(depth)
        yield self.emit("{")
        first = True
        for name, sub in props.items():
            if sub is False:
                continue
            if name not in required and (small or not self.chance(0.6)):
                continue
            if not first:
                yield self.emit(", ")
            first = False
            yield from self.key(name)
            yield from self.value(sub, depth + 1)
        for name in sorted(required - props.keys()):  # required but not described
            if not first:
                yield self.emit(", ")
            first = False
            yield from self.key(name)
            yield from self.value(schema.get("additionalProperties", True), depth + 1)
        extra = schema.get("additionalProperties")
        if not props and not required and extra is not False and not small:
            for i in range(1 + self.below(3)):
                if not first:
                    yield self.emit(", ")
                first = False
                yield from self.key(_WORD_POOL[self.below(len(_WORD_POOL))] + str(i))
                if isinstance(extra, dict):
                    yield from self.value(extra, depth + 1)
                else:
                    yield from self.any_value(depth + 1)
        yield self.emit("}")

    def array(self, schema: dict[str, Any], depth: int) -> Iterator[str]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        lo = max(0, int(schema.get("minItems", 0)))
        hi_raw = schema.get("maxItems")
        hi = max(lo, hi_raw) if isinstance(hi_raw, int) else lo + 3
        yield self.emit("[")
        n = 0
        if isinstance(prefix, list):  # a tuple: its items, more only if "items" allows
            for sub in prefix[: hi_raw if isinstance(hi_raw, int) else None]:
                if n:
                    yield self.emit(", ")
                yield from self.value(sub, depth + 1)
                n += 1
            count = max(n, lo) if isinstance(schema.get("items"), dict) else n
        else:
            low = lo if self.small(depth) else max(lo, 1)
            count = low + self.below(max(1, min(hi, low + 3) - low + 1))
        while n < count:
            if n:
                yield self.emit(", ")
            yield from self.value(items, depth + 1)
            n += 1
        yield self.emit("]")

    def string(self, schema: dict[str, Any]) -> Iterator[str]:
        fmt = schema.get("format")
        lo = max(0, int(schema.get("minLength", 0)))
        hi_raw = schema.get("maxLength")
        hi = int(hi_raw) if isinstance(hi_raw, int) else None
        yield self.emit('"')
        formatted = self.formatted(fmt) if isinstance(fmt, str) else None
        if formatted is not None and lo <= len(formatted) and (hi is None or len(formatted) <= hi):
            for p in _pieces(formatted):
                yield self.emit(p)
        elif lo or hi is not None:
            base = max(lo, 1) if hi is None else min(max(lo, 1), hi)
            top = base + 24 if hi is None else min(hi, base + 24)
            target = base + self.below(top - base + 1)
            length = 0
            while length < target:
                word = _WORD_POOL[self.below(len(_WORD_POOL))]
                piece = (" " + word if length else word)[: target - length]
                length += len(piece)
                yield self.emit(piece)
        else:
            for i in range(1 + self.below(6)):
                r = self.rng.random()
                if r < 0.7:
                    word = _WORD_POOL[self.below(len(_WORD_POOL))]
                    yield self.emit(" " + word if i else word)
                elif r < 0.95:
                    yield self.emit(_TEXT_POOL[self.below(len(_TEXT_POOL))])
                else:
                    yield self.emit(_ESCAPES[self.below(len(_ESCAPES))])
        yield self.emit('"')

    def formatted(self, fmt: str) -> str | None:
        b = self.below
        if fmt == "date-time":
            return f"{2020 + b(6)}-{1 + b(12):02}-{1 + b(28):02}T{b(24):02}:{b(60):02}:{b(60):02}Z"
        if fmt == "date":
            return f"{2020 + b(6)}-{1 + b(12):02}-{1 + b(28):02}"
        if fmt == "time":
            return f"{b(24):02}:{b(60):02}:{b(60):02}Z"
        if fmt == "email":
            return f"{_WORD_POOL[b(len(_WORD_POOL))]}{b(100)}@example.com"
        if fmt == "uuid":
            h = "".join("0123456789abcdef"[b(16)] for _ in range(32))
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        if fmt in ("uri", "url"):
            return f"https://example.com/{_WORD_POOL[b(len(_WORD_POOL))]}"
        return None

    def bounds(self, schema: dict[str, Any]) -> tuple[float, float, bool, bool]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        open_lo = open_hi = False
        if isinstance(xlo, bool):  # draft 4: a flag on minimum
            open_lo, xlo = xlo, None
        if isinstance(xhi, bool):
            open_hi, xhi = xhi, None
        if isinstance(xlo, int | float) and (not isinstance(lo, int | float) or xlo >= lo):
            lo, open_lo = xlo, True
        if isinstance(xhi, int | float) and (not isinstance(hi, int | float) or xhi <= hi):
            hi, open_hi = xhi, True
        lo_f = float(lo) if isinstance(lo, int | float) else None
        hi_f = float(hi) if isinstance(hi, int | float) else None
        if lo_f is None and hi_f is None:
            lo_f, hi_f = 0.0, 100.0
        elif lo_f is None:
            assert hi_f is not None
            lo_f = hi_f - 100.0
        elif hi_f is None:
            hi_f = lo_f + 100.0
        assert lo_f is not None and hi_f is not None
        return lo_f, hi_f, open_lo, open_hi

    def integer(self, schema: dict[str, Any]) -> str:
        lo_f, hi_f, open_lo, open_hi = self.bounds(schema)
        lo = math.floor(lo_f) + 1 if open_lo else math.ceil(lo_f)
        hi = math.ceil(hi_f) - 1 if open_hi else math.floor(hi_f)
        if hi < lo:
            return str(lo)
        return str(lo + self.below(hi - lo + 1))

    def number(self, schema: dict[str, Any]) -> str:
        lo, hi, open_lo, open_hi = self.bounds(schema)
        x = round(lo + self.rng.random() * (hi - lo), 2)
        if x < lo or x > hi or (open_lo and x == lo) or (open_hi and x == hi):
            x = (lo + hi) / 2
        return repr(float(x))

    # free-form JSON (format "json", empty schemas)

    def any_object(self, depth: int) -> Iterator[str]:
        yield self.emit("{")
        n = 1 + self.below(4) if not self.small(depth) else 0
        for i in range(n):
            if i:
                yield self.emit(", ")
            yield from self.key(
                _WORD_POOL[self.below(len(_WORD_POOL))] + ("" if i == 0 else str(i))
            )
            yield from self.any_value(depth + 1)
        yield self.emit("}")

    def any_value(self, depth: int) -> Iterator[str]:
        r = self.below(10)
        if self.small(depth) or depth > 2:
            r = min(r, 5)
        if r <= 1:
            yield from self.string({})
        elif r == 2:
            yield self.emit(str(self.below(1000)))
        elif r == 3:
            yield self.emit(repr(round(self.rng.random() * 100, 2)))
        elif r == 4:
            yield self.emit("true" if self.chance(0.5) else "false")
        elif r == 5:
            yield self.emit("null")
        elif r <= 7:
            yield from self.any_object(depth + 1)
        else:
            yield self.emit("[")
            for i in range(1 + self.below(3)):
                if i:
                    yield self.emit(", ")
                if self.chance(0.5):
                    yield from self.string({})
                else:
                    yield self.emit(str(self.below(100)))
            yield self.emit("]")


def document(spec: FormatSpec, base: str) -> Iterator[str]:
    """The tokens of the document a context ``base`` gets (a new one, no continuation)."""
    return _Writer(spec, hashlib.blake2b(base.encode(), digest_size=16).digest()).document()


def _skip(tokens: Iterator[str], text: str) -> str | None:
    """Consume ``tokens`` while they spell ``text``; None if they do not. Returns the
    rest of the token that ``text`` ends inside ("" at a token boundary)."""
    pos, n = 0, len(text)
    while pos < n:
        tok = next(tokens, None)
        if tok is None:
            return None
        end = pos + len(tok)
        if end <= n:
            if not text.startswith(tok, pos):
                return None
            pos = end
        else:
            return tok[n - pos :] if tok.startswith(text[pos:]) else None
    return ""


def continuation(spec: FormatSpec, context: str) -> Iterator[str]:
    """The tokens that follow ``context``: the rest of the document it holds a prefix
    of (the earliest such start wins), else a new document (see the module doc)."""
    start = max(0, len(context) - SEARCH_WINDOW)
    candidates = sorted(j for c in spec.starts for j in _find_all(context, c, start))
    if candidates:
        h = hashlib.blake2b(context[: candidates[0]].encode(), digest_size=16)
        prev = candidates[0]
        for j in candidates:
            h.update(context[prev:j].encode())
            prev = j
            tokens = _Writer(spec, h.copy().digest()).document()
            rest = _skip(tokens, context[j:])
            if rest is not None:
                return _chain(rest, tokens)
    return document(spec, context)


def _find_all(text: str, char: str, start: int) -> Iterator[int]:
    j = text.find(char, start)
    while j >= 0:
        yield j
        j = text.find(char, j + 1)


def _chain(first: str, tokens: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from tokens


# --- the generation --------------------------------------------------------------------


class _Table:
    """The vocabulary of one format request: the model's tokens (thinking), then the
    document's, appended as they are produced (ids index both lists)."""

    __slots__ = ("json", "tokens")

    def __init__(self, vocab: model.Vocabulary) -> None:
        self.tokens: list[str] = list(vocab.tokens)
        self.json: list[bytes] = list(vocab.json)

    def add(self, token: str) -> int:
        self.tokens.append(token)
        self.json.append(msgspec.json.encode(token))
        return len(self.tokens) - 1


class FormatGeneration:
    """A generation whose content is one JSON document (a :class:`model.TokenSource`).

    With ``thinking``, the model thinks first (the same tokens as without a format),
    then the document's base is the context with that thinking and the closing tag.
    The document ends the output (``"stop"``); ``num_predict`` cuts it (``"length"``).
    """

    __slots__ = (
        "_context",
        "_doc",
        "_inner",
        "_next",
        "_next_thinking",
        "_spec",
        "_thought",
        "count",
        "done_reason",
        "max_tokens",
        "thinking",
        "vocab",
    )

    def __init__(
        self,
        context: str,
        spec: FormatSpec,
        *,
        thinking: bool = False,
        num_predict: int | None = None,
        max_tokens: int = model.DEFAULT_MAX_TOKENS,
        vocab: model.Vocabulary = model.DEFAULT_VOCAB,
    ) -> None:
        self._spec = spec
        self._context = context
        self.max_tokens = max_tokens if num_predict is None or num_predict < 0 else num_predict
        self._inner: model.Generation | None = (
            model.Generation(context, thinking=True, max_tokens=self.max_tokens, vocab=vocab)
            if thinking
            else None
        )
        self._thought: list[str] = []
        self._doc: Iterator[str] | None = None
        self.vocab = _Table(vocab)
        self._next = -2
        self._next_thinking = thinking
        self.thinking = thinking
        self.count = 0
        self.done_reason: str | None = None

    def _decide(self) -> int:
        if self.count >= self.max_tokens:
            self.done_reason = "length"
            self._next = -1
            return -1
        inner = self._inner
        if inner is not None:
            if inner.peek_done():
                self.done_reason = inner.done_reason or "length"
                self._next = -1
                return -1
            if inner.next_is_thinking():
                tok = inner.step()
                self._thought.append(self.vocab.tokens[tok])
                self._next, self._next_thinking = tok, True
                return tok
            # Thinking is over: the document follows the closed think block.
            self._inner = None
            self._context += "".join(self._thought) + model.THINK_CLOSE
        if self._doc is None:
            self._doc = continuation(self._spec, self._context)
        piece = next(self._doc, None)
        if piece is None:
            self.done_reason = "stop"
            self._next = -1
            return -1
        self._next, self._next_thinking = self.vocab.add(piece), False
        return self._next

    def peek_done(self) -> bool:
        nxt = self._next
        if nxt == -2:
            nxt = self._decide()
        return nxt < 0

    def step(self) -> int:
        nxt = self._next
        if nxt == -2:
            nxt = self._decide()
        if nxt < 0:
            return -1
        self._next = -2
        self.thinking = self._next_thinking
        self.count += 1
        return nxt
