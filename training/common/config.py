"""The strict dataclass builder both trainers' configs use: unknown keys and wrong scalar types
are errors, nested dataclasses are built recursively, ints are accepted for floats. And how a
config is read from and written to JSON, the same for both, so a config stored in a checkpoint
or a manifest by one trainer's version reads back the way the other's does."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Generic, TypeVar, get_origin, get_type_hints

C = TypeVar("C")


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


class ConfigFormat(Generic[C]):
    """A trainer's config as plain JSON: ``from_dict`` (strict, via :func:`build_dataclass`),
    ``load`` (a ``configs/*.json`` file) and ``to_dict`` (what is stored verbatim in the
    dataset, the checkpoint and the manifest). Each trainer binds it to its top-level config
    class and exports the three as ``config_from_dict``, ``load_config`` and
    ``config_to_dict``."""

    def __init__(self, cls: type[C]) -> None:
        self.cls = cls

    def from_dict(self, data: dict[str, Any]) -> C:
        return build_dataclass(self.cls, data, "config")

    def load(self, path: str | Path) -> C:
        with open(path) as f:
            return self.from_dict(json.load(f))

    def to_dict(self, cfg: C) -> dict[str, Any]:
        return dataclasses.asdict(cfg)  # type: ignore[call-overload]
