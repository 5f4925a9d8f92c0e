"""The lightcone reader registry: the same protocol as ``service.spectra.registry``.

Each reader module registers an ``identify`` (cheap: magic bytes, headers) and a ``read``
(returns one :class:`Lightcone`) by kebab-case name with a priority; the best match wins, a
tie is an error. Separate from the spectrum registry so that a spectrum endpoint never
decodes a cube and vice versa; the :class:`~service.spectra.source.Source` (size limit,
bounded gunzip, checked FITS view) is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.spectra.errors import SpectrumError
from service.spectra.source import Source

from .errors import LightconeError
from .lightcone import Lightcone

IdentifyFn = Callable[[Source], bool]
ReadFn = Callable[[Source], Lightcone]


@dataclass(frozen=True)
class Reader:
    name: str
    identify: IdentifyFn
    read: ReadFn
    priority: int = 0
    description: str = ""


_READERS: dict[str, Reader] = {}


def register_reader(name: str, identify: IdentifyFn, read: ReadFn, *, priority: int = 0,
                    description: str = "") -> Reader:
    if name in _READERS:
        raise ValueError(f"lightcone reader {name!r} registered twice")
    reader = Reader(name, identify, read, priority, description)
    _READERS[name] = reader
    return reader


def readers() -> list[Reader]:
    return sorted(_READERS.values(), key=lambda r: (-r.priority, r.name))


def get_reader(name: str) -> Reader:
    try:
        return _READERS[name]
    except KeyError:
        raise LightconeError("unknown_format", f"no lightcone reader named {name!r}") from None


def identify_format(source: Source) -> Reader:
    """The single best reader for ``source``; typed error when none or two of equal rank fit."""
    matches: list[Reader] = []
    for reader in readers():
        try:
            ok = reader.identify(source)
        except SpectrumError:
            raise
        except Exception:  # noqa: BLE001 — an identify that trips over the bytes means "not mine"
            ok = False
        if ok:
            matches.append(reader)
    if not matches:
        raise LightconeError("unknown_format", "no lightcone reader identifies this input "
                             f"(known: {', '.join(r.name for r in readers())})",
                             source=source.name)
    if len(matches) > 1 and matches[0].priority == matches[1].priority:
        names = ", ".join(r.name for r in matches if r.priority == matches[0].priority)
        raise LightconeError("ambiguous_format", f"several readers match: {names}",
                             source=source.name)
    return matches[0]


def read_lightcone(source: Source, format: str | None = None) -> tuple[str, Lightcone]:
    """Read the lightcone in ``source``; returns (format name, lightcone).

    Anything a reader raises that is not a typed error is reported as ``corrupt_file``, never
    a crash: the input is untrusted."""
    reader = get_reader(format) if format else identify_format(source)
    try:
        lc = reader.read(source)
    except SpectrumError:
        raise
    except MemoryError:
        raise LightconeError("too_large", "input too large to decode", source=source.name) from None
    except Exception as exc:  # noqa: BLE001 — untrusted input: never a 500
        raise LightconeError("corrupt_file", f"{reader.name}: {type(exc).__name__}: {exc}",
                             source=source.name) from None
    lc.meta.setdefault("format", reader.name)
    return reader.name, lc
