"""Reader registries, after astropy's io registry: identify functions vote, priority ranks.

Each reader module calls its kind's ``register_reader`` once, at import, with an ``identify``
(cheap, bytes/headers only) and a ``read``. Reader modules are imported by name in each kind's
``readers/__init__.py``; there is no discovery magic. :class:`ReaderRegistry` is the one
mechanism; each kind keeps its own instance (``service.spectra.registry``,
``service.lightcones.registry``), so that a spectrum endpoint never decodes a cube and vice
versa.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import InputError
from .source import Source

T = TypeVar("T")


@dataclass(frozen=True)
class Reader(Generic[T]):
    name: str  # kebab-case format name, e.g. "sdss-spec"
    identify: Callable[[Source], bool]
    read: Callable[[Source], T]
    priority: int = 0
    description: str = ""


class ReaderRegistry(Generic[T]):
    """Named readers of one kind of record; ``error`` is the typed error raised for bad input."""

    def __init__(self, what: str, error: type[InputError] = InputError) -> None:
        self.what = what
        self.error = error
        self._readers: dict[str, Reader[T]] = {}

    def register(self, name: str, identify: Callable[[Source], bool],
                 read: Callable[[Source], T], *, priority: int = 0,
                 description: str = "") -> Reader[T]:
        if name in self._readers:
            raise ValueError(f"{self.what} reader {name!r} registered twice")
        reader = Reader(name, identify, read, priority, description)
        self._readers[name] = reader
        return reader

    def readers(self) -> list[Reader[T]]:
        return sorted(self._readers.values(), key=lambda r: (-r.priority, r.name))

    def get(self, name: str) -> Reader[T]:
        try:
            return self._readers[name]
        except KeyError:
            raise self.error("unknown_format", f"no {self.what} reader named {name!r}") from None

    def identify(self, source: Source) -> Reader[T]:
        """The single best reader for ``source``, or a typed error when none or two fit.

        An ``InputError`` raised while identifying (a corrupt FITS, a gzip bomb) propagates:
        it is a better answer than "unknown format". Any other exception from an identify
        function counts as "not mine".
        """
        matches: list[Reader[T]] = []
        for reader in self.readers():
            try:
                ok = reader.identify(source)
            except InputError:
                raise
            except Exception:  # noqa: BLE001 — an identify tripping over the bytes: not mine
                ok = False
            if ok:
                matches.append(reader)
        if not matches:
            known = ", ".join(r.name for r in self.readers())
            raise self.error("unknown_format", f"no {self.what} reader identifies this input "
                             f"(known: {known})", source=source.name)
        if len(matches) > 1 and matches[0].priority == matches[1].priority:
            names = ", ".join(r.name for r in matches if r.priority == matches[0].priority)
            raise self.error("ambiguous_format", f"several readers match: {names}",
                             source=source.name)
        return matches[0]

    def read(self, source: Source, format: str | None = None) -> tuple[str, T]:
        """(format name, what the reader returned).

        Readers raise typed errors for what they recognise as bad; anything else they raise
        is a bug or an exotic corruption of untrusted input, reported as ``corrupt_file``
        rather than a crash.
        """
        reader = self.get(format) if format else self.identify(source)
        try:
            return reader.name, reader.read(source)
        except InputError:
            raise
        except MemoryError:
            raise self.error("too_large", "input too large to decode",
                             source=source.name) from None
        except Exception as exc:  # noqa: BLE001 — untrusted input: never a 500
            raise self.error("corrupt_file", f"{reader.name}: {type(exc).__name__}: {exc}",
                             source=source.name) from None
