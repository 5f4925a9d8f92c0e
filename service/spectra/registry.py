"""The reader registry, after astropy's io registry: identify functions vote, priority ranks.

Each reader module calls :func:`register_reader` once, at import, with an ``identify``
(cheap, bytes/headers only) and a ``read`` (returns one or more :class:`Spectrum`). Reader
modules are imported by name in ``readers/__init__.py``; there is no discovery magic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import SpectrumError
from .source import Source
from .spectrum import Spectrum

IdentifyFn = Callable[[Source], bool]
ReadFn = Callable[[Source], list[Spectrum]]


@dataclass(frozen=True)
class Reader:
    name: str  # kebab-case format name, e.g. "sdss-spec"
    identify: IdentifyFn
    read: ReadFn
    priority: int = 0
    description: str = ""


_READERS: dict[str, Reader] = {}


def register_reader(
    name: str, identify: IdentifyFn, read: ReadFn, *, priority: int = 0, description: str = ""
) -> Reader:
    if name in _READERS:
        raise ValueError(f"reader {name!r} registered twice")
    reader = Reader(name, identify, read, priority, description)
    _READERS[name] = reader
    return reader


def readers() -> list[Reader]:
    return sorted(_READERS.values(), key=lambda r: (-r.priority, r.name))


def get_reader(name: str) -> Reader:
    try:
        return _READERS[name]
    except KeyError:
        raise SpectrumError("unknown_format", f"no reader named {name!r}") from None


def identify_format(source: Source) -> Reader:
    """The single best reader for ``source``, or a typed error when none or two fit.

    A ``SpectrumError`` raised while identifying (a corrupt FITS, a gzip bomb) propagates:
    it is a better answer than "unknown format". Any other exception from an identify
    function counts as "not mine".
    """
    matches: list[Reader] = []
    for reader in readers():
        try:
            ok = reader.identify(source)
        except SpectrumError:
            raise
        except Exception:
            ok = False
        if ok:
            matches.append(reader)
    if not matches:
        raise SpectrumError("unknown_format", "no reader identifies this input", source=source.name)
    if len(matches) > 1 and matches[0].priority == matches[1].priority:
        names = ", ".join(r.name for r in matches if r.priority == matches[0].priority)
        raise SpectrumError(
            "ambiguous_format", f"several readers match: {names}", source=source.name
        )
    return matches[0]


def read_spectra(source: Source, format: str | None = None) -> tuple[str, list[Spectrum]]:
    """Read every spectrum in ``source``; returns (format name, spectra).

    Readers raise ``SpectrumError`` for what they recognise as bad; anything else they raise
    is a bug or an exotic corruption, reported as ``corrupt_file`` rather than a crash.
    """
    reader = get_reader(format) if format else identify_format(source)
    try:
        spectra = reader.read(source)
    except SpectrumError:
        raise
    except MemoryError:
        raise SpectrumError("too_large", "input too large to decode", source=source.name) from None
    except Exception as exc:
        raise SpectrumError(
            "corrupt_file", f"{reader.name}: {type(exc).__name__}: {exc}", source=source.name
        ) from None
    if not spectra:
        raise SpectrumError("empty_spectrum", "the file holds no spectra", source=source.name)
    for s in spectra:
        s.meta.setdefault("format", reader.name)
    return reader.name, spectra
