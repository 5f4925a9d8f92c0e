"""``specula inspect FILE... [--output jsonl|text]``: what is in spectrum files, one line each.

For every spectrum: the file, the reader that took it, object id, pixel count, wavelength
range (Å), masked fraction, and the fraction of the canonical grid its range covers. A file
that cannot be read gives one line with its error code and the run goes on; the exit status
is 1 when any file failed, else 0. Nothing is resampled, so inspecting an exposure is cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .errors import SpectrumError
from .preprocess import DEFAULT_GRID, LogLambdaGrid
from .registry import read_spectra
from .source import Source
from .spectrum import Spectrum


def grid_coverage(spectrum: Spectrum, grid: LogLambdaGrid = DEFAULT_GRID) -> float:
    """Fraction of grid pixels that overlap the spectrum's wavelength range at all.

    The same definition as ``Resampled.coverage`` in preprocess.py, without resampling.
    """
    w = spectrum.wavelength
    if w.shape[0] < 2:
        return 0.0
    lo = w[0] - 0.5 * (w[1] - w[0])
    hi = w[-1] + 0.5 * (w[-1] - w[-2])
    e = grid.edges
    return float(((e[1:] > lo) & (e[:-1] < hi)).mean())


def describe(path: str, reader: str, spectrum: Spectrum) -> dict[str, Any]:
    return {
        "file": path,
        "reader": reader,
        "object_id": spectrum.object_id,
        "npix": spectrum.npix,
        "wavelength_min": round(float(spectrum.wavelength[0]), 3),
        "wavelength_max": round(float(spectrum.wavelength[-1]), 3),
        "masked_fraction": round(spectrum.masked_fraction, 6),
        "grid_coverage": round(grid_coverage(spectrum), 6),
    }


def inspect_file(path: str, max_bytes: int | None = None) -> list[dict[str, Any]]:
    """Lines for one file; a ``SpectrumError`` becomes one error line (never raised)."""
    try:
        source = Source.from_path(path, **({"max_bytes": max_bytes} if max_bytes else {}))
        reader, spectra = read_spectra(source)
    except SpectrumError as exc:
        return [{"file": path, "error": exc.code, "detail": exc.detail}]
    return [describe(path, reader, s) for s in spectra]


def _text(line: dict[str, Any]) -> str:
    if "error" in line:
        return f"{line['file']}: ERROR {line['error']}: {line['detail']}"
    return (f"{line['file']} [{line['reader']}] {line['object_id'] or '-'}: {line['npix']} px, "
            f"{line['wavelength_min']:.1f}–{line['wavelength_max']:.1f} Å, "
            f"{line['masked_fraction']:.1%} masked, grid coverage {line['grid_coverage']:.1%}")


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="specula inspect", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--output", choices=("jsonl", "text"), default="jsonl")
    parser.add_argument("--max-bytes", type=int, default=None, help="per-file size limit")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    failed = False
    for path in args.files:
        for line in inspect_file(path, args.max_bytes):
            failed |= "error" in line
            out.write((json.dumps(line) if args.output == "jsonl" else _text(line)) + "\n")
    out.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
