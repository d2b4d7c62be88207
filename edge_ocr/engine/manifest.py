"""The schema of a model pack's ``manifest.json``: strict frozen dataclasses that
``models/build.py`` writes and ``load_pack`` reads, so the writer and the reader cannot drift.

``from_json`` refuses unknown keys, missing keys and values of the wrong type, naming the key
path (``stages.rec.variants.int8.sha256: required key missing``). Optional keys are ``None``
and are left out when written. ``accuracy`` is measured data (``edge-ocr eval --json``, filed by
models/record_accuracy.py) and stays a free-form mapping. Standard library only.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any

MANIFEST_VERSION = "1"


class ManifestError(ValueError):
    """A manifest that does not match the schema; the message names the key path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRef:
    """Where a file came from: a registry package, the member's path in it and its sha256; a
    charset may instead come from a model's metadata (``metadata_key``)."""

    package: str | None = None
    path: str | None = None
    sha256: str | None = None
    licence: str | None = None
    metadata_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputSpec:
    """How a model is fed: layout, normalisation and sizes (0 or absent = not fixed)."""

    layout: str | None = None
    height: int | None = None
    width: int | None = None
    min_width: int | None = None
    max_width: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    multiple: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantEntry:
    """One shipped file of a stage (fp32 or int8), pinned by sha256."""

    file: str
    sha256: str
    bytes: int
    method: str
    speed_vs_fp32: float | None = None
    agreement: dict[str, float] | None = None  # int8 against fp32, as measure_int8.py reports it


@dataclass(frozen=True, slots=True, kw_only=True)
class CharsetEntry:
    """A recogniser's character list: one character per line; the CTC blank is class 0."""

    file: str
    size: int
    blank_index: int
    space_appended: bool
    num_classes: int
    source: SourceRef
    sha256: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StageEntry:
    kind: str  # db | ctc | angle
    shared: str | None = None  # the pack whose files these are (referenced by relative path)
    input: InputSpec | None = None
    postprocess: dict[str, float] | None = None  # det: the thresholds it was published with
    labels: tuple[str, ...] | None = None  # cls
    source: SourceRef
    variants: dict[str, VariantEntry]
    charset: CharsetEntry | None = None  # rec


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    name: str
    version: str
    description: str
    languages: tuple[str, ...]
    licence: str
    stages: dict[str, StageEntry]
    accuracy: dict[str, Any]

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and check a manifest. Raises ManifestError naming the key path."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ManifestError("not JSON: %s" % exc) from exc
        return _build(cls, data, "")

    def to_json(self) -> str:
        """The manifest as written to disk (2-space indent, UTF-8 text, trailing newline)."""
        return json.dumps(to_plain(self), indent=2, ensure_ascii=False) + "\n"


def to_plain(value: Any) -> Any:
    """JSON-ready data: dataclasses as objects without their None fields, tuples as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value) if getattr(value, f.name) is not None}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ManifestError("%s: expected an object, got %s" % (where or "manifest", type(data).__name__))
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for extra in sorted(set(data) - known):
        raise ManifestError("%s: unknown key" % _join(where, extra))
    values = {}
    for f in fields(cls):
        key = _join(where, f.name)
        if f.name not in data:
            if f.default is MISSING:
                raise ManifestError("%s: required key missing" % key)
            continue
        values[f.name] = _convert(hints[f.name], data[f.name], key)
    return cls(**values)


def _convert(kind: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):  # X | None
        if value is None:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if isinstance(kind, type) and is_dataclass(kind):
        return _build(kind, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestError("%s: expected an object" % where)
        if args[1] is Any:
            return value
        return {k: _convert(args[1], v, _join(where, k)) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise ManifestError("%s: expected a list" % where)
        return tuple(_convert(args[0], v, "%s[%d]" % (where, i)) for i, v in enumerate(value))
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value  # kept as written (an int stays an int), so a manifest round-trips unchanged
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, bool) and type(value) is kind:
        return value
    raise ManifestError("%s: expected %s, got %r" % (where, getattr(kind, "__name__", kind), value))


def _join(where: str, key: str) -> str:
    return "%s.%s" % (where, key) if where else key
