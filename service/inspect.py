"""``specula inspect FILE... [--output jsonl|text]``: what is in spectrum and lightcone files, one line each.

For every spectrum: the file, the reader that took it, object id, pixel count, wavelength
range (Å), masked fraction, the fraction of the canonical grid its range covers, and, when
the file carries them, its own pipeline's answer (``pipeline``: SDSS SPECOBJ CLASS, SUBCLASS,
Z, ...), to set beside `specula classify`'s. A file no spectrum reader takes is tried as a
lightcone, as the server's lightcone routes would read it: shape, redshift range, cell size
and simulation parameters. A file that cannot be read gives one line ``{"file", "source", "error":
{"code", "detail", "source"}}`` (the per-item error shape of `specula classify`) and the run
goes on; the exit status is 1 when any file failed, else 0. Nothing is resampled, so
inspecting an exposure is cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from service.io.errors import InputError
from service.io.source import Source
from service.lightcones import Lightcone, read_lightcone
from service.spectra import DEFAULT_GRID, LogLambdaGrid, Spectrum, SpectrumError, read_spectra


def grid_coverage(spectrum: Spectrum, grid: LogLambdaGrid = DEFAULT_GRID) -> float:
    """Fraction of grid pixels that overlap the spectrum's wavelength range at all.

    The same definition as ``Resampled.coverage`` in service/spectra/preprocess.py, without resampling.
    """
    w = spectrum.wavelength
    if w.shape[0] < 2:
        return 0.0
    lo = w[0] - 0.5 * (w[1] - w[0])
    hi = w[-1] + 0.5 * (w[-1] - w[-2])
    e = grid.edges
    return float(((e[1:] > lo) & (e[:-1] < hi)).mean())


# the survey pipeline's own classification and redshift, as the readers put them in meta
PIPELINE_KEYS = ("class", "subclass", "z", "z_err", "zwarning", "z_status", "spec_cln")


def pipeline_answer(spectrum: Spectrum) -> dict[str, Any]:
    """The file's own CLASS/SUBCLASS/Z... (empty when it has none): what a user compares the
    model's answer with first."""
    out = {}
    for key in PIPELINE_KEYS:
        value = spectrum.meta.get(key)
        if value is not None:
            out[key] = value.strip() if isinstance(value, str) else value
    return out


def describe(path: str, reader: str, spectrum: Spectrum) -> dict[str, Any]:
    line = {
        "file": path,
        "reader": reader,
        "object_id": spectrum.object_id,
        "npix": spectrum.npix,
        "wavelength_min": round(float(spectrum.wavelength[0]), 3),
        "wavelength_max": round(float(spectrum.wavelength[-1]), 3),
        "masked_fraction": round(spectrum.masked_fraction, 6),
        "grid_coverage": round(grid_coverage(spectrum), 6),
    }
    pipeline = pipeline_answer(spectrum)
    if pipeline:
        line["pipeline"] = pipeline
    return line


def describe_lightcone(path: str, reader: str, lc: Lightcone) -> dict[str, Any]:
    z = lc.redshifts
    return {
        "file": path,
        "reader": reader,
        "kind": "lightcone",
        "shape": list(lc.shape),
        "redshift_min": None if z is None else round(float(z.min()), 6),
        "redshift_max": None if z is None else round(float(z.max()), 6),
        "cell_mpc": lc.cell_mpc,
        "params": lc.params,
    }


def inspect_file(path: str, max_bytes: int | None = None) -> list[dict[str, Any]]:
    """Lines for one file; an ``InputError`` becomes one error line (never raised)."""
    try:
        source = Source.from_path(path, **({"max_bytes": max_bytes} if max_bytes else {}))
        reader, spectra = read_spectra(source)
    except InputError as exc:
        if exc.code == "unknown_format":
            return inspect_lightcone(path, source, exc)
        return [error_line(path, exc)]
    return [describe(path, reader, s) for s in spectra]


def inspect_lightcone(path: str, source: Source, spectrum_error: InputError
                      ) -> list[dict[str, Any]]:
    """A file no spectrum reader takes, read as a lightcone; when no lightcone reader takes
    it either, the error names both kinds of reader."""
    try:
        reader, lc = read_lightcone(source)
    except InputError as exc:
        if exc.code != "unknown_format":
            return [error_line(path, exc)]
        return [error_line(path, SpectrumError(
            "unknown_format", f"{spectrum_error.detail}; {exc.detail}"))]
    return [describe_lightcone(path, reader, lc)]


def error_line(path: str, exc: InputError) -> dict[str, Any]:
    """The per-item error shape of `specula classify` and the HTTP results (``source``,
    ``error: {code, detail, source}``), so one parser reads all three; ``file`` too, which
    every inspect line has."""
    return {"file": path, "source": path,
            "error": {"code": exc.code, "detail": exc.detail, "source": path}}


def _text(line: dict[str, Any]) -> str:
    if "error" in line:
        return f"{line['file']}: ERROR {line['error']['code']}: {line['error']['detail']}"
    if line.get("kind") == "lightcone":
        z = ("z unknown" if line["redshift_min"] is None
             else f"z {line['redshift_min']:.2f}–{line['redshift_max']:.2f}")
        return (f"{line['file']} [{line['reader']}] lightcone "
                f"{'×'.join(map(str, line['shape']))}, {z}, cell {line['cell_mpc']} Mpc")
    text = (f"{line['file']} [{line['reader']}] {line['object_id'] or '-'}: {line['npix']} px, "
            f"{line['wavelength_min']:.1f}–{line['wavelength_max']:.1f} Å, "
            f"{line['masked_fraction']:.1%} masked, grid coverage {line['grid_coverage']:.1%}")
    if "pipeline" in line:
        text += ", pipeline " + " ".join(
            f"{k.upper()}={v:.6g}" if isinstance(v, float) else f"{k.upper()}={v}"
            for k, v in line["pipeline"].items())
    return text


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="specula inspect", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="spectrum files (any reader of `specula classify`) or lightcones")
    parser.add_argument("--output", choices=("jsonl", "text"), default="jsonl",
                        help="jsonl: one JSON object per line (default); text: one readable "
                             "line each")
    parser.add_argument("--max-bytes", type=int, default=None, metavar="N",
                        help="per-file size limit in bytes (default: 128 MiB, as the readers')")
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
