"""The spectrum reader registry: one :class:`~service.io.registry.ReaderRegistry` instance.

Each module in ``readers/`` calls ``register_reader`` once, at import; ``read_spectra`` is
what every caller reads a file's spectra with.
"""

from __future__ import annotations

from service.io.registry import ReaderRegistry
from service.io.source import Source

from .errors import SpectrumError
from .spectrum import Spectrum

SPECTRUM_READERS: ReaderRegistry[list[Spectrum]] = ReaderRegistry("spectrum", SpectrumError)
register_reader = SPECTRUM_READERS.register
readers = SPECTRUM_READERS.readers
get_reader = SPECTRUM_READERS.get
identify_format = SPECTRUM_READERS.identify


def read_spectra(source: Source, format: str | None = None) -> tuple[str, list[Spectrum]]:
    """Read every spectrum in ``source``; returns (format name, spectra). Zero bytes are
    ``empty_file`` before any reader looks: "no reader identifies it" would send a user
    hunting for a format problem in a file that was never written."""
    if not source.data:
        raise SpectrumError("empty_file", "the file is empty (0 bytes)", source=source.name)
    name, spectra = SPECTRUM_READERS.read(source, format)
    if not spectra:
        raise SpectrumError("empty_spectrum", "the file holds no spectra", source=source.name)
    for s in spectra:
        s.meta.setdefault("format", name)
    return name, spectra
