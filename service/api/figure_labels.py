"""What the figures write on their axes: spectral lines, flux units, parameter symbols, and
where line labels go so that none covers another.

Kept apart from the drawing (:mod:`.plots`) because these are facts about the data (which
unit a survey's flux is in, which symbol an astronomer uses for a 21cmFAST parameter) and a
small geometric rule, each testable without rendering anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Vacuum rest wavelengths (Å). Emission lines from the SDSS pipeline's emlines.par (air → vacuum
# above 2000 Å, Morton 1991), absorption lines from the same conversion of their air values.
# (label, λ_vac, kind): kind "em" (emission), "abs" (absorption) or "balmer" (either). Listed
# in order of importance: when labels crowd, the later ones are dropped first.
LINES: list[tuple[str, float, str]] = [
    ("Lyα", 1215.67, "em"), ("C IV", 1549.48, "em"), ("Mg II", 2800.32, "em"),
    ("Hα", 6564.61, "balmer"), ("Hβ", 4862.68, "balmer"), ("[O III]", 5008.24, "em"),
    ("[O II]", 3728.48, "em"), ("C III]", 1908.73, "em"), ("K", 3934.77, "abs"),
    ("H", 3969.59, "abs"), ("Na D", 5894.57, "abs"), ("Mg b", 5176.7, "abs"),
    ("Hγ", 4341.68, "balmer"), ("Hδ", 4102.89, "balmer"), ("[N II]", 6585.27, "em"),
    ("[S II]", 6725.48, "em"), ("G band", 4305.61, "abs"), ("N V", 1240.81, "em"),
    ("He II", 1640.42, "em"), ("[Ne III]", 3869.86, "em"), ("He I", 5877.31, "em"),
]
# which lines a class is expected to show; stars get the absorption set at z = 0
CLASS_LINES = {"QSO": {"em", "balmer"}, "GALAXY": {"em", "abs", "balmer"},
               "STAR": {"abs", "balmer"}}

# The flux unit of each reader's output, where the format fixes it (the SDSS and DESI data
# models: 1e-17 erg s⁻¹ cm⁻² Å⁻¹). A reader that finds the unit in the file (ESO SDP's TUNIT)
# puts it in ``meta["flux_unit"]``, which wins. Anything else is drawn in the units it was sent.
SDSS_FLUX_UNIT = "10⁻¹⁷ erg s⁻¹ cm⁻² Å⁻¹"
FORMAT_FLUX_UNITS = {"sdss-spec": SDSS_FLUX_UNIT, "sdss-spspec": SDSS_FLUX_UNIT,
                     "desi-coadd": SDSS_FLUX_UNIT}
UNKNOWN_FLUX_UNIT = "units as sent"

# 21cmFAST parameter (manifest name) → (symbol, unit as written after a value). The symbols of
# Park et al. 2019 / 21cmFAST's own docs; mathtext where a subscript is needed. The unit of a
# log10 parameter says what the logarithm is of.
PARAMETER_SYMBOLS: dict[str, tuple[str, str]] = {
    "HII_EFF_FACTOR": ("ζ", ""),
    "L_X": (r"$\log_{10} L_{\rm X}$", r"($L_{\rm X}$ in erg s$^{-1}$ M$_\odot^{-1}$ yr)"),
    "NU_X_THRESH": (r"$E_0$", "eV"),
    "ION_Tvir_MIN": (r"$\log_{10} T_{\rm vir}$", r"($T_{\rm vir}$ in K)"),
    "OMm": (r"$\Omega_{\rm m}$", ""),
}


def lines_in_view(z: float, lam_min: float, lam_max: float, cls: str | None = None
                  ) -> list[tuple[str, float, str]]:
    """The class's lines that fall in [lam_min, lam_max] at redshift ``z``, observed λ, in
    order of importance."""
    kinds = CLASS_LINES.get(cls or "", {"em", "abs", "balmer"})
    return [(n, lam * (1 + z), k) for n, lam, k in LINES
            if k in kinds and lam_min <= lam * (1 + z) <= lam_max]


def flux_unit(meta: Mapping[str, Any]) -> str:
    """The unit of a decoded spectrum's flux: the file's own, the format's, or 'as sent'."""
    own = str(meta.get("flux_unit") or "").strip()
    return own or FORMAT_FLUX_UNITS.get(str(meta.get("format", "")), UNKNOWN_FLUX_UNIT)


def parameter_symbol(name: str) -> str:
    return PARAMETER_SYMBOLS.get(name, (name, ""))[0]


def parameter_unit(name: str, manifest_unit: str = "") -> str:
    """The unit written after a value: the symbol table's, else the manifest's."""
    return PARAMETER_SYMBOLS[name][1] if name in PARAMETER_SYMBOLS else manifest_unit


def assign_rows(centres: Sequence[float], widths: Sequence[float], n_rows: int,
                pad: float = 2.0) -> list[int | None]:
    """A row for each label (centre and width in display pixels) such that no two labels in
    a row overlap (closer than ``pad``), or None where every row is taken there: the label is
    dropped. Labels are placed in the order given (most important first), each in the lowest
    free row, so a crowded region keeps its important labels."""
    taken: list[list[tuple[float, float]]] = [[] for _ in range(n_rows)]
    rows: list[int | None] = []
    for c, w in zip(centres, widths):
        lo, hi = c - w / 2 - pad, c + w / 2 + pad
        row = next((r for r in range(n_rows)
                    if all(hi <= a or lo >= b for a, b in taken[r])), None)
        if row is not None:
            taken[row].append((lo, hi))
        rows.append(row)
    return rows
