"""The real spectra the project can reach (evaluation/real_spectra.py) are read by the service's
own readers, exactly as shipped, and the served model answers each one through the offline
pipeline. Whether it is *right* is the report's business (models/spectrum_classifier/*/report.md),
not a test's: these spectra are the check, never a target to tune to."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.real_spectra import REAL_SPECTRA, classify_real, markdown, ppxf_dir, resolve
from service.spectra import Source, read_spectra

REPO = Path(__file__).resolve().parents[2]
READERS = {"spec-1198-52669-0063.fits": "sdss-spec", "NGC3522_SDSS_DR18.fits": "sdss-spec",
           "NGC3073_SDSS_DR18.fits": "sdss-spec", "legac_M19_56670_v3.0.fits": "eso-sdp"}
needs_ppxf = pytest.mark.skipif(ppxf_dir() is None, reason="ppxf (the dev extra) not installed")


@needs_ppxf
@pytest.mark.parametrize("entry", REAL_SPECTRA, ids=lambda e: Path(e.file).name)
def test_each_real_spectrum_is_read_by_its_reader(entry):
    path = resolve(entry)
    if path is None:
        pytest.skip(f"{entry.file} not on this machine")
    fmt, specs = read_spectra(Source.from_path(path))
    assert fmt == READERS[path.name] and len(specs) == 1
    lam = specs[0].wavelength
    # every one of them overlaps the model grid (3600-9200 Å) by at least a third of it
    assert lam.min() < 6000 and lam.max() > 9000


@needs_ppxf
def test_the_served_model_answers_every_real_spectrum():
    rows = classify_real(str(REPO / "models"))
    assert len(rows) == sum(resolve(e) is not None for e in REAL_SPECTRA) >= 3
    for r in rows:
        a = r["answer"]
        assert "error" not in a, a
        assert a["class"] in ("GALAXY", "QSO", "STAR") and a["z_sigma"] > 0
    table = markdown(rows)
    assert table.count("\n") == len(rows) + 1
