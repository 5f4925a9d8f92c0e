"""Regenerate the hostile-input corpus in tests/ops/hostile/ (deterministic; small files).

    .venv/bin/python -m tests.support.make_hostile

Each file is something a survey pipeline, a broken disk or an attacker could send to
``/v1/spectra:classify``; tests/ops/test_hostile.py posts every one over real HTTP and expects a
4xx in bounded time and memory. ``EXPECTED`` maps file name -> the accepted status codes.
Inputs that would be large on disk (oversized bodies, thousands of multipart parts) are built
by the test itself.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
from pathlib import Path

import numpy as np

CORPUS_DIR = Path(__file__).resolve().parents[1] / "ops" / "hostile"
CARD = 80
BLOCK = 2880


def header(cards: dict[str, object]) -> bytes:
    """A FITS header block from cards (values formatted as FITS fixed format)."""
    out = b""
    for k, v in cards.items():
        if isinstance(v, bool):
            val = "T" if v else "F"
        elif isinstance(v, str):
            val = f"'{v:<8}'"
        else:
            val = str(v)
        out += f"{k:<8}= {val:>20}".ljust(CARD).encode()
    out += b"END".ljust(CARD)
    return out.ljust(-(-len(out) // BLOCK) * BLOCK, b" ")


def sdss_like_fits() -> bytes:
    """A small valid SDSS-spec-like file (primary + COADD table) built with astropy."""
    from astropy.io import fits
    n = 500
    loglam = np.linspace(np.log10(3800), np.log10(9200), n).astype("f4")
    cols = [fits.Column("flux", "E", array=np.ones(n, "f4")),
            fits.Column("loglam", "E", array=loglam),
            fits.Column("ivar", "E", array=np.ones(n, "f4")),
            fits.Column("and_mask", "J", array=np.zeros(n, "i4"))]
    primary = fits.PrimaryHDU()
    primary.header["PLATE"], primary.header["MJD"], primary.header["FIBERID"] = 1, 50000, 1
    buf = io.BytesIO()
    fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="COADD")]).writeto(buf)
    return buf.getvalue()


BOMBS = ("bomb.fits.gz", "bomb_nested.fits.gz")


def corpus(bombs: bool = True) -> dict[str, bytes]:
    good = sdss_like_fits()
    files: dict[str, bytes] = {}
    # FITS
    files["truncated.fits"] = good[: len(good) // 2]
    files["truncated_header.fits"] = good[:1000]
    files["corrupt_header.fits"] = b"SIMPLE  =                    T" + bytes(range(256)) * 12
    files["huge_dims.fits"] = header({"SIMPLE": True, "BITPIX": -64, "NAXIS": 2,
                                      "NAXIS1": 2**31 - 1, "NAXIS2": 2**31 - 1})
    files["huge_table.fits"] = header({"SIMPLE": True, "BITPIX": 8, "NAXIS": 0,
                                       "EXTEND": True}) + header({
        "XTENSION": "BINTABLE", "BITPIX": 8, "NAXIS": 2, "NAXIS1": 12, "NAXIS2": 2**40,
        "PCOUNT": 0, "GCOUNT": 1, "TFIELDS": 3, "TTYPE1": "flux", "TFORM1": "E",
        "TTYPE2": "loglam", "TFORM2": "E", "TTYPE3": "ivar", "TFORM3": "E",
        "EXTNAME": "COADD"})
    files["negative_naxis.fits"] = header({"SIMPLE": True, "BITPIX": 16, "NAXIS": 1,
                                           "NAXIS1": -5})
    files["bitpix_bogus.fits"] = header({"SIMPLE": True, "BITPIX": 7, "NAXIS": 1,
                                         "NAXIS1": 10}) + b"\0" * BLOCK
    # gzip bombs: 96 MB of zeros (~95 kB), over the test service's 64 MB per-file limit;
    # and a gzip inside a gzip
    zeros = b"SIMPLE  =                    T".ljust(BLOCK, b" ") + b"\0" * (96 * 2**20 * bombs)
    files["bomb.fits.gz"] = gzip.compress(zeros, 9, mtime=0)
    files["bomb_nested.fits.gz"] = gzip.compress(gzip.compress(zeros, 9, mtime=0), 9, mtime=0)
    if not bombs:
        del files["bomb.fits.gz"], files["bomb_nested.fits.gz"]
    files["bad_gzip.fits.gz"] = gzip.compress(good, mtime=0)[:300] + b"\xff" * 100
    # JSON
    wave = list(np.linspace(3800, 9200, 200).round(2))
    files["nan_inf.json"] = json.dumps({"spectra": [{"wavelength": wave,
                                                    "flux": [float("nan")] * 100
                                                    + [float("inf")] * 100,
                                                    "ivar": [1.0] * 200}]}).encode()
    files["all_nan_wavelength.json"] = json.dumps({"spectra": [{
        "wavelength": [float("nan")] * 200, "flux": [1.0] * 200}]}).encode()
    files["wrong_dtype.json"] = json.dumps({"spectra": [{"wavelength": ["a"] * 10,
                                                         "flux": [{"x": 1}] * 10}]}).encode()
    files["wrong_types.json"] = json.dumps({"spectra": "not a list"}).encode()
    files["length_mismatch.json"] = json.dumps({"spectra": [{"wavelength": wave,
                                                             "flux": [1.0] * 3}]}).encode()
    files["deep_nesting.json"] = b'{"spectra": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    files["deep_objects.json"] = b"{\"a\":" * 10_000 + b"1" + b"}" * 10_000
    files["huge_number.json"] = b'{"spectra": [{"wavelength": [1e999999], "flux": [' + \
        b"9" * 10_000 + b"]}]}"
    files["empty.json"] = b"{}"
    # .npy
    def npy(descr: str, shape: tuple, payload: bytes) -> bytes:
        hdr = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
        hdr = hdr.ljust(-(-(len(hdr) + 11) // 64) * 64 - 11) + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr + payload
    files["huge_declared.npy"] = npy("<f8", (3, 10**12), b"\0" * 800)
    files["object_pickle.npy"] = npy("|O", (3, 4), b"\x80\x04\x95" + b"\0" * 60)
    files["strings.npy"] = npy("<U8", (3, 4), b"\0" * 384)
    files["complex.npy"] = npy("<c16", (3, 4), b"\0" * 192)
    files["wrong_rank.npy"] = npy("<f4", (2, 3, 4, 5), b"\0" * 480)
    files["short_payload.npy"] = npy("<f4", (3, 1000), b"\0" * 100)
    # other
    files["empty.bin"] = b""
    files["random.bin"] = np.random.default_rng(7).bytes(4096)
    return files


# file -> accepted statuses (all 4xx; the code is in the body)
EXPECTED_4XX = frozenset({400, 413, 415, 422})


def main() -> None:
    for name, data in corpus().items():
        (CORPUS_DIR / name).write_bytes(data)
    print(f"{len(corpus())} files in {CORPUS_DIR}")


if __name__ == "__main__":
    main()
