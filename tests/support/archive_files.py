"""Write a small archive of real-format spectrum files (and some broken ones) for the tests.

SDSS ``spec-*.fits`` files from ``tests/support/spectrum_writers.py`` (written with
astropy, independently of the readers), spread over nested directories, plus files that must
become error rows: a truncated FITS, a text file, an empty file, and a spectrum outside the
model's wavelength grid.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.spectrum_writers import sdss_like_spectrum, write_sdss_spec

N_GOOD = 40  # good files in the session archive (conftest.archive)
BAD = {"truncated.fits": "corrupt_file", "notes.dat": "unknown_format",
       "empty.fits": "empty_file", "infrared.fits": "no_grid_overlap"}


def write_archive(root: Path, n_good: int, *, n_templates: int = 8) -> dict[str, str]:
    """``n_good`` SDSS files under root/plate-XX/ and the BAD files; returns {path: code}."""
    templates = [write_sdss_spec(sdss_like_spectrum(seed=s), variant="lite", plate=1000 + s,
                                 fiber=1 + s) for s in range(n_templates)]
    for i in range(n_good):
        d = root / f"plate-{i % 5:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"spec-{i:05d}.fits").write_bytes(templates[i % n_templates])
    bad_dir = root / "plate-99"
    bad_dir.mkdir(parents=True, exist_ok=True)
    (bad_dir / "truncated.fits").write_bytes(templates[0][:5000])
    (bad_dir / "notes.dat").write_text("not a spectrum\n")
    (bad_dir / "empty.fits").write_bytes(b"")
    (bad_dir / "infrared.fits").write_bytes(
        write_sdss_spec(sdss_like_spectrum(loglam0=4.2, seed=1), variant="lite"))
    return {str(bad_dir / name): code for name, code in BAD.items()}
