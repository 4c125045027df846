"""Typed dataclass fields read from text: each field's type, choices and None-ability from its annotation,
text values converted to it (YAML reads ``1e-3`` as a string), config files read, and the docs table of fields.
Shared by every config dataclass (``PretrainConfig`` and any that extend it)."""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from ..utils.io import atomic_write_text


def documented(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text: the CLI's --help, the docs table and the YAML keys read it."""
    return field(metadata={"help": text}, **kwargs)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _members(cls: type, name: str) -> tuple[Any, ...]:
    hint = _type_hints(cls)[name]
    return get_args(hint) if get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def nullable(cls: type, name: str) -> bool:
    """Whether field ``name`` of ``cls`` accepts None."""
    return type(None) in _members(cls, name)


def choices(cls: type, name: str) -> tuple[Any, ...]:
    """The values a Literal field (optionally Optional) of ``cls`` allows."""
    return tuple(v for m in _members(cls, name) for v in (get_args(m) if get_origin(m) is Literal else (None,)))


def scalar_types(cls: type, name: str) -> tuple[type, ...]:
    """The scalar types (bool, int, float, str) field ``name`` of ``cls`` accepts."""
    return tuple(a for a in _members(cls, name) if a in (bool, int, float, str))


def coerce(cls: type, name: str, value: Any) -> Any:
    """``value`` as the type of ``cls``'s field ``name`` when it came as text (YAML reads ``1e-3`` as a string)."""
    kinds = scalar_types(cls, name)
    if not isinstance(value, str) or not kinds or str in kinds:
        return value
    for kind in kinds:
        if kind is bool and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        try:
            if kind is not bool:
                number = float(value)
                return int(number) if kind is int and number.is_integer() else kind(value)
        except ValueError:
            continue
    expected = " or ".join(k.__name__ for k in kinds)
    raise ValueError(f"{name} must be {expected}, got {value!r}.")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of fields in a YAML or JSON config file (not yet validated)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"Cannot read config file {path}: {err}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}.")
    return data


def fields_table(cls: type) -> str:
    """The markdown table of the fields ``cls`` itself declares (its docs page holds it; a test keeps it equal)."""
    own = [cls.__dataclass_fields__[name] for name in cls.__annotations__]
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for f in own:
        text = f.metadata["help"].replace("%%", "%").replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{f.default!r}` | {text} |")
    return "\n".join(rows)


def write_fields_table(cls: type, doc: str | Path) -> None:
    """Replace the table between the markers of ``doc`` with ``fields_table(cls)``."""
    start, end = "<!-- fields table: generated -->\n", "\n<!-- end of fields table -->"
    text = Path(doc).read_text(encoding="utf-8")
    head, rest = text.split(start, 1)
    atomic_write_text(doc, head + start + fields_table(cls) + end + rest.split(end, 1)[1])
