"""Validation shared by the run config and the task options: errors that name the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Literal

__all__ = ["ConfigError", "check_range", "check_types"]

NULLS = ("null", "none", "None", "~")  # strings that mean YAML's null for optional keys


class ConfigError(ValueError):
    """A bad config key or value; the message starts with the key."""


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise `ConfigError` unless ``low <= value <= high`` (strict where ``*_open``)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"{name}: expected a value in {span}, got {value!r}")


def check_types(instance: object) -> None:
    """Check (and coerce int -> float) every field against its annotation; `ConfigError` names the field."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        ok, coerced = _conforms(value, hints[f.name])
        if not ok:
            raise ConfigError(f"{f.name}: expected {_describe(hints[f.name])}, got {value!r}")
        setattr(instance, f.name, coerced)


def _conforms(value, annotation) -> tuple[bool, object]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in typing.get_args(annotation) and value in NULLS:  # "--key null" on the command line
            return True, None
        for option in typing.get_args(annotation):
            ok, coerced = _conforms(value, option)
            if ok:
                return True, coerced
        return False, value
    if origin is Literal:
        return value in typing.get_args(annotation), value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    return True, value


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))
