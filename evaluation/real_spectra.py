"""Every real, labelled spectrum the project can reach, run through a served model version
exactly as `specula classify` runs it (the service's readers, preprocessing and ONNX graph).

Why: a simulator can be learned to 99 %; only real spectra say whether the physics in it is
the physics of the sky. The project never trains on these — they are few, and they are the
check. Each entry says where its label comes from, because pipeline labels can be wrong:
NGC 3073 is a nearby dwarf galaxy that the SDSS template fit calls STAR A0.

The table is data (``REAL_SPECTRA``); ``python -m evaluation.real_spectra [--version N]`` prints it
with the model's answers as Markdown, for a model report.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.inference.offline import classify_file, load_pipeline

from .report_cli import report_main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class RealSpectrum:
    file: str  # "shared:<path under ../shared/data>" or "ppxf:<path under the ppxf package>"
    top_class: str  # GALAXY / QSO / STAR: the astrophysical truth
    z: float
    label_source: str
    note: str = ""


REAL_SPECTRA: tuple[RealSpectrum, ...] = (
    RealSpectrum("shared:sdss/spec-1198-52669-0063.fits", "STAR", 0.000153,
                 "SDSS DR16 SPECOBJ: STAR A0", "subtype A"),
    RealSpectrum("ppxf:spectra/NGC3522_SDSS_DR18.fits", "GALAXY", 0.004018,
                 "SDSS DR18 SPECOBJ: GALAXY BROADLINE", "nearby early-type galaxy"),
    RealSpectrum("ppxf:spectra/NGC3073_SDSS_DR18.fits", "GALAXY", 0.003763,
                 "dwarf galaxy NGC 3073; z from SDSS SPECOBJ",
                 "SPECOBJ's class is STAR A0: a template-fit failure on a very nearby galaxy"),
    RealSpectrum("ppxf:spectra/legac_M19_56670_v3.0.fits", "GALAXY", 0.6686,
                 "LEGA-C DR3 (van der Wel et al. 2021), via ppxf's LEGA-C example",
                 "ESO SDP (VIMOS HR_red, 5800-9500 Å)"),
)


def ppxf_dir() -> Path | None:
    spec = importlib.util.find_spec("ppxf")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def resolve(entry: RealSpectrum) -> Path | None:
    """The file on this machine, or None where its package or ../shared is absent."""
    where, rel = entry.file.split(":", 1)
    root = SHARED if where == "shared" else ppxf_dir()
    if root is None:
        return None
    path = root / rel
    return path if path.is_file() else None


def classify_real(repository: str = "models", model: str = "spectrum_classifier",
                  version: int | None = None) -> list[dict[str, Any]]:
    """One row per reachable real spectrum: the truth beside the served answer."""
    pipeline = load_pipeline(repository, model, version, "cpu")
    rows = []
    for entry in REAL_SPECTRA:
        path = resolve(entry)
        if path is None:
            continue
        (answer,) = list(classify_file(pipeline, str(path), 64, None))
        rows.append({"entry": entry, "answer": answer,
                     "class_ok": answer.get("class") == entry.top_class,
                     "dz": (abs(answer["z"] - entry.z) / (1 + entry.z)
                            if "z" in answer else None)})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| spectrum | truth (source) | answer | P | z true | z | Δz/(1+z) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        e, a = r["entry"], r["answer"]
        if "error" in a:
            lines.append(f"| {Path(e.file).name} | {e.top_class} ({e.label_source}) | "
                         f"error {a['error']['code']} | | {e.z:.4f} | | |")
            continue
        lines.append(f"| {Path(e.file).name} | {e.top_class} ({e.label_source}) | "
                     f"{a['label']} | {a['class_probability']:.3f} | {e.z:.4f} | "
                     f"{a['z']:.4f} ± {a['z_sigma']:.4f} | {r['dz']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return report_main(__doc__, "spectrum_classifier", classify_real, markdown, argv)


if __name__ == "__main__":
    raise SystemExit(main())
