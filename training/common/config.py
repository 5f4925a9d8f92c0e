"""The strict dataclass builder both trainers' configs use: unknown keys and wrong scalar types
are errors, nested dataclasses are built recursively, ints are accepted for floats."""

from __future__ import annotations

import dataclasses
from typing import Any, get_origin, get_type_hints


def build_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    """``cls(**data)`` checked key by key; ``where`` names the place in error messages."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build_dataclass(hint, value, f"{where}.{key}")
        elif get_origin(hint) is None and hint in (int, float, bool, str):
            if hint is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, hint):
                raise ValueError(f"{where}.{key}: expected {hint.__name__}, got {value!r}")
            kwargs[key] = value
        else:
            origin = get_origin(hint)
            if origin is not None and not isinstance(value, origin):
                raise ValueError(f"{where}.{key}: expected {origin.__name__}, got {value!r}")
            kwargs[key] = value
    return cls(**kwargs)
