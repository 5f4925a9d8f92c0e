"""The lightcone reader registry: one :class:`~service.io.registry.ReaderRegistry` instance.

Separate from the spectrum registry so that a spectrum endpoint never decodes a cube and vice
versa; the :class:`~service.io.source.Source` (size limit, bounded gunzip, checked FITS view)
and the registry mechanism are shared (``service.io``).
"""

from __future__ import annotations

from service.io.registry import ReaderRegistry
from service.io.source import Source

from .errors import LightconeError
from .lightcone import Lightcone

LIGHTCONE_READERS: ReaderRegistry[Lightcone] = ReaderRegistry("lightcone", LightconeError)
register_reader = LIGHTCONE_READERS.register
readers = LIGHTCONE_READERS.readers
get_reader = LIGHTCONE_READERS.get
identify_format = LIGHTCONE_READERS.identify


def read_lightcone(source: Source, format: str | None = None) -> tuple[str, Lightcone]:
    """Read the lightcone in ``source``; returns (format name, lightcone)."""
    name, lc = LIGHTCONE_READERS.read(source, format)
    lc.meta.setdefault("format", name)
    return name, lc
