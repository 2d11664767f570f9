"""Frozen-dataclass configs <-> plain dicts, strictly.

``dataclass_from_dict(cls, data)`` builds a (possibly nested) config dataclass from a
JSON-like dict: unknown keys raise ValueError (a typo must not silently fall back to a
default), values are checked against the field's annotation, JSON lists become tuples where
the field is a tuple, and nested dataclasses are built recursively. ``parse_field_value``
turns a command-line string (``--set lr=3e-4``) into a value of the field's type.

Supported annotations: int, float, bool, str, ``X | None``, ``Literal[...]``,
``tuple[X, ...]``, ``tuple[X, Y]``, dict, and nested dataclasses. Pure Python.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, TypeVar, Union, cast
from collections.abc import Mapping

T = TypeVar("T")


def dataclass_to_dict(obj: Any) -> dict:
    """``dataclasses.asdict`` with tuples kept as lists (JSON's shape)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build ``cls`` from ``data``; unknown keys or mistyped values raise ValueError."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    # ``T`` is any dataclass; typeshed's ``fields`` wants a DataclassInstance it cannot name here.
    names = {f.name for f in dataclasses.fields(cast(Any, cls)) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{cls.__name__}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def parse_field_value(text: str, annotation: Any, where: str) -> Any:
    """Parse a command-line string into ``annotation``'s type."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_field_value(text, inner[0], where) if len(inner) == 1 else text
    if annotation is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: {text!r} is not a boolean")
    if annotation in (int, float):
        try:
            value = float(text) if annotation is float else int(text)
        except ValueError as exc:
            raise ValueError(f"{where}: {text!r} is not a {annotation.__name__}") from exc
        return value
    if annotation is str or origin is Literal:
        return _coerce(text, annotation, where)
    try:  # tuples, dicts: JSON syntax ("[1,5,10]")
        return _coerce(json.loads(text), annotation, where)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: {text!r} is not valid JSON for {annotation}") from exc


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors) or f"{where}: None not allowed")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} not one of {list(args)}")
        return value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):  # a class, not an instance
        if isinstance(value, annotation):
            return value
        return dataclass_from_dict(annotation, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[]") for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[]") for v, a in zip(value, args))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected a bool, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an int, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise ValueError(f"{where}: unsupported annotation {annotation!r}")
