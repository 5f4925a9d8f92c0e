"""Fuzz: byte-mutated real files (the SDSS star in ../shared, specutils' DESI files, an
spPlate built around the SDSS star).

Every mutant must read (and preprocess) into spectra or give a registered InputError code
that a reader raised on purpose — never another exception, never the registry's catch-all
(``corrupt_file`` with a "reader: SomeError" detail), never a hang. Mutations concentrate on
headers (where sizes and layouts are declared) and also hit the data. Deterministic seed;
case counts print with ``pytest -s`` and are asserted.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest

from service.io import InputError
from service.spectra import ERROR_CODES, Source, preprocess, read_spectra
from tests.support.multi_object_files import real_plate

GENERIC = re.compile(r"^[a-z-]+: [A-Za-z_.]*(Error|Exception)\b")
DIGITS = [b"0", b"9", b"99999999", b"-1", b"1000000000", b"2147483648", b"' '", b"E", b"P"]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(6)
    header_end = min(len(b), 40 * 2880)
    if kind == 0:  # flip a few bytes in the headers
        for _ in range(rng.integers(1, 8)):
            b[rng.integers(header_end)] = rng.integers(256)
    elif kind == 1:  # overwrite a card value with a hostile number/string
        i = int(rng.integers(header_end // 80)) * 80
        tok = DIGITS[rng.integers(len(DIGITS))]
        b[i + 10 : i + 30] = tok.rjust(20)[:20]
    elif kind == 2:  # truncate anywhere
        del b[rng.integers(len(b)) :]
    elif kind == 3:  # random bytes anywhere (data corruption)
        for _ in range(rng.integers(1, 64)):
            b[rng.integers(len(b))] = rng.integers(256)
    elif kind == 4:  # delete or insert a chunk (shifts every later block)
        i = int(rng.integers(len(b)))
        if rng.integers(2):
            del b[i : i + int(rng.integers(1, 5000))]
        else:
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8))
    else:  # a structural keyword set to something absurd
        for key in (b"NAXIS1  = ", b"NAXIS2  = ", b"TFIELDS = ", b"PCOUNT  = ", b"ZNAXIS2 = "):
            hits = [m.start() for m in re.finditer(re.escape(key), bytes(b[:header_end]))]
            if hits and rng.integers(2):
                i = hits[rng.integers(len(hits))]
                b[i + 10 : i + 30] = DIGITS[rng.integers(len(DIGITS))].rjust(20)[:20]
    return bytes(b)


def run_fuzz(data: bytes, name: str, cases: int, seed: int, budget_s: float) -> Counter:
    rng = np.random.default_rng(seed)
    outcomes: Counter = Counter()
    t0 = time.perf_counter()
    for _ in range(cases):
        if time.perf_counter() - t0 > budget_s:
            break
        mutant = mutate(data, rng)
        try:
            _, spectra = read_spectra(Source(mutant, name=name))
            outcomes["read"] += 1
        except InputError as exc:
            _check(exc)
            outcomes[exc.code] += 1
            continue
        for s in spectra:  # each target on its own: one empty fibre does not hide the rest
            try:
                preprocess(s)
                outcomes["preprocessed"] += 1
            except InputError as exc:
                _check(exc)
                outcomes["preprocess:" + exc.code] += 1
    return outcomes


def _check(exc: InputError) -> None:
    assert exc.code in ERROR_CODES
    assert not GENERIC.match(exc.detail), f"unchecked failure: {exc.detail}"


def _cases(out: Counter) -> int:
    """Mutants tried: each either read or failed to read."""
    return sum(v for k, v in out.items() if k != "preprocessed" and not k.startswith("prep"))


TOTAL: Counter = Counter()


@pytest.mark.slow
def test_fuzz_sdss(sdss_spec_path):
    out = run_fuzz(sdss_spec_path.read_bytes(), "spec.fits", cases=1500, seed=1, budget_s=15)
    TOTAL.update(out)
    print(f"\nfuzz sdss: {_cases(out)} mutants {dict(out)}")
    assert _cases(out) >= 300 and out["preprocessed"] > 0 and len(out) > 3


@pytest.mark.slow
@pytest.mark.parametrize("fname,cases,budget", [("coadd-sv3-dark-26065.fits", 600, 8),
                                                ("spectra-5-169-thru20210419.fits", 150, 5)])
def test_fuzz_desi(desi_paths, fname, cases, budget):
    out = run_fuzz(desi_paths[fname].read_bytes(), fname, cases=cases, seed=2, budget_s=budget)
    TOTAL.update(out)
    print(f"\nfuzz {fname}: {_cases(out)} mutants {dict(out)}")
    assert _cases(out) >= 40 and out["preprocessed"] > 0 and len(out) > 2


@pytest.mark.slow
def test_fuzz_spplate(sdss_spec_path):
    """The eight-fibre plate around the real star (tests/support/multi_object_files.py)."""
    out = run_fuzz(real_plate(sdss_spec_path), "spPlate-1198-52669.fits", cases=600, seed=3,
                   budget_s=8)
    TOTAL.update(out)
    print(f"\nfuzz spPlate: {_cases(out)} mutants {dict(out)}")
    assert _cases(out) >= 100 and out["preprocessed"] > 0 and len(out) > 3


def test_fuzz_total_reported():
    print(f"\nfuzz total: {_cases(TOTAL)} mutants {dict(TOTAL)}")
    if not TOTAL:
        pytest.skip("fuzz tests not run in this session")
    assert _cases(TOTAL) >= 400
