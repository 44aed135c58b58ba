"""Type checks of QuantConfig fields, so a bad edit (`--set calib_size=abc`, a hand-written
JSON config) is a ConfigError naming the field, not a TypeError deep in calibration.

The expected type of each field is its annotation (int, float, str, bool, `X | None`,
`tuple[float, ...]`, `dict[str, int | None]`, or a nested config section). An int is
accepted where a float is expected (NaN and inf are not); a bool is never accepted as a
number.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from qmamba.errors import ConfigError


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # no field means anything with NaN or inf
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        key_t, value_t = typing.get_args(hint)
        return isinstance(value, dict) and all(_matches(k, key_t) and _matches(v, value_t)
                                               for k, v in value.items())
    return True  # a type this checker does not know: left to the field's own checks


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    names = {bool: "true/false", int: "an integer", float: "a finite number", str: "a string",
             type(None): "null"}
    if hint in names:
        return names[hint]
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def check_field_types(config: Any, prefix: str = "") -> None:
    """ConfigError for the first field of `config` (a dataclass, recursively) whose value
    does not have its annotated type."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value, hint, name = getattr(config, f.name), hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ConfigError(f"config field {name!r} is a section of fields (a JSON object), "
                                  f"got {value!r}")
            check_field_types(value, f"{name}.")
        elif not _matches(value, hint):
            raise ConfigError(f"config field {name!r} must be {_describe(hint)}, got {value!r}")
