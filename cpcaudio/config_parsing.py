"""Plain YAML/JSON values into config dataclasses: type checks against the annotations, and the messages.

The machinery behind :meth:`cpcaudio.config.CPCConfig.from_dict` and ``--set``: :func:`build_dataclass`
checks every value against its field's annotation (Literal, Optional, tuples, bool, int, float, str,
nested dataclasses) and raises :class:`~cpcaudio.errors.ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

import yaml

from cpcaudio.errors import ConfigError


def to_plain(value: Any) -> Any:
    """Nested dicts, lists and tuples as dicts and lists (tuples become lists)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def all_keys(data: Mapping[str, Any]) -> list[str]:
    """Every ``section.key`` of a plain nested config dict."""
    return [f"{s}.{k}" for s, fields_ in data.items() if isinstance(fields_, dict) for k in fields_]


def suggest(key: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_problem(error: Exception) -> str:
    """One line for a YAML/JSON parse error: what went wrong and where (line, column)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "msg", None) or str(error).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    line = getattr(error, "lineno", None)
    return f"{problem} at line {line}, column {getattr(error, 'colno', '?')}" if line else str(problem)


def parse_assignment(assignment: str) -> tuple[str, Any]:
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like section.key=value, e.g. context.hidden_dim=128")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return key, value


def build_dataclass(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """``cls(**data)`` with every value checked against its annotation; ``prefix`` names the section."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        allowed = ", ".join(known)
        candidates = [f"{prefix}{name}" for name in known]
        raise ConfigError(f"unknown config key '{key}'; allowed here: {allowed}{suggest(key, candidates)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce_value(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def coerce_value(annotation: Any, value: Any, key: str) -> Any:
    """Check ``value`` against ``annotation`` and convert lists to tuples; raise ConfigError if wrong."""
    if dataclasses.is_dataclass(annotation):
        return build_dataclass(annotation, value, prefix=f"{key}.")
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce_value(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, e.g. [{', '.join('1' for _ in args[:2])}]; got {value!r}")
        item_type = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_value(item_type, v, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} entries; got {len(value)}")
        return tuple(coerce_value(a, v, key) for a, v in zip(args, value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {annotation!r} for {key}")  # internal bug
