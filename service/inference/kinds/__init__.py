"""The kinds of model the server serves, one module each (see base.py for what a kind is).

Kind modules are named here, as reader modules are in ``service.spectra.readers``: no
discovery magic, and a kind is served once it is listed in :data:`KINDS`.
"""

from .base import Built, ModelKind
from .lightcone import LightconeKind
from .spectrum import SpectrumKind

KINDS: tuple[type[ModelKind], ...] = (SpectrumKind, LightconeKind)

__all__ = ["KINDS", "Built", "LightconeKind", "ModelKind", "SpectrumKind"]
