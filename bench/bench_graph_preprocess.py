"""Preprocessing as an ONNX graph against the numpy reference, in one run on the same inputs.

    .venv/bin/python -m bench.bench_graph_preprocess [--seconds 2] [--rounds 3] [--json out.json]

Inputs: the real SDSS spectrum (../shared/data/sdss) as 2,436 fibres with independent noise
drawn from its own ivar (bench.common.exposure_fibres), flux and ivar rounded to float32 (what
the graph takes). Measured, in spectra/s of wall time and CPU µs per spectrum:

- numpy: ``preprocess`` one spectrum at a time on this thread (the service's per-spectrum
  path), and ``preprocess_many`` over the exposure (its shared-grid block path);
- graph: ``build_operator`` (the cached lookup, hashing the wavelength bytes each call) plus
  ``run_graph`` at batch 1, 64, 256 and the whole 2,436-row exposure, on a session with 2
  intra-op threads, spinning off (service.inference.runner.session_options); and the
  exposure again in 32-row blocks (``run_graph(..., block_rows=32)``).

Each figure is the median of ``--rounds`` interleaved passes, so a neighbour's burst on a
shared machine does not land on one side only. The ratio is graph / numpy per-spectrum.
Prints a markdown table; nothing asserts (tests/service/spectra/test_graph_preprocess.py is
the parity check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.common import EXPOSURE_FIBRES, SDSS, exposure_fibres
from service.inference.runner import session_options
from service.spectra import DEFAULT_GRID, Source, make_spectrum, preprocess, read_spectra
from service.spectra.graph_preprocess import build_operator, preprocess_graph, run_graph
from service.spectra.preprocess import preprocess_many

BATCHES = (1, 64, 256, EXPOSURE_FIBRES)
THREADS = 2
BLOCK = 32  # run_graph's block_rows for the blocked exposure case


def rate(fn: Callable[[], object], n_spectra: int, seconds: float) -> tuple[float, float]:
    """(spectra/s wall, CPU µs per spectrum) of back-to-back calls for ``seconds``."""
    fn()
    calls, t0, c0 = 0, time.perf_counter(), time.process_time()
    while calls < 2 or time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n_spectra * calls / wall, cpu / (n_spectra * calls) * 1e6


def fibres() -> list:
    _, (base,) = read_spectra(Source.from_path(SDSS))
    rows = exposure_fibres(base, EXPOSURE_FIBRES, np.random.default_rng(0))
    return [make_spectrum(s.wavelength, s.flux.astype(np.float32), s.ivar.astype(np.float32),
                          s.mask, s.meta) for s in rows]


def measure(seconds: float, rounds: int) -> dict[str, tuple[float, float]]:
    spectra = fibres()
    wave = spectra[0].wavelength
    flux = np.stack([s.flux for s in spectra]).astype(np.float32)
    ivar = np.stack([np.where(s.mask, 0.0, s.ivar) for s in spectra]).astype(np.float32)
    sess = ort.InferenceSession(preprocess_graph(DEFAULT_GRID).SerializeToString(),
                                session_options(THREADS), providers=["CPUExecutionProvider"])
    cases: dict[str, tuple[Callable[[], object], int]] = {}
    it = iter(range(10**12))

    def one_numpy() -> None:
        preprocess(spectra[next(it) % len(spectra)], DEFAULT_GRID)

    cases["numpy preprocess, per spectrum"] = (one_numpy, 1)
    cases[f"numpy preprocess_many, exposure ({EXPOSURE_FIBRES})"] = (
        lambda: preprocess_many(spectra, DEFAULT_GRID), EXPOSURE_FIBRES)
    for bs in BATCHES:
        f, v = np.ascontiguousarray(flux[:bs]), np.ascontiguousarray(ivar[:bs])
        cases[f"graph, batch {bs}"] = (
            lambda f=f, v=v: run_graph(sess, f, v, build_operator(wave, DEFAULT_GRID)), bs)
    cases[f"graph, exposure ({EXPOSURE_FIBRES}) in blocks of {BLOCK}"] = (
        lambda: run_graph(sess, flux, ivar, build_operator(wave, DEFAULT_GRID), BLOCK),
        EXPOSURE_FIBRES)
    passes: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, (fn, n) in cases.items():
            passes[name].append(rate(fn, n, seconds))
    return {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
            for k, v in passes.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per case and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    print(f"# bench_graph_preprocess: {platform.machine()}, {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}, numpy {np.__version__}, onnxruntime "
          f"{ort.__version__}, grid {DEFAULT_GRID.npix} px, graph threads {THREADS}")
    out = measure(args.seconds, args.rounds)
    base = out["numpy preprocess, per spectrum"][0]
    print("| path | spectra/s | CPU µs / spectrum | ratio to numpy per spectrum |")
    print("|---|---:|---:|---:|")
    for name, (r, cpu) in out.items():
        print(f"| {name} | {r:,.0f} | {cpu:,.1f} | {r / base:.2f} |")
    print(f"# load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({k: {"spectra_per_s": r, "cpu_us_per_spectrum": c}
                                         for k, (r, c) in out.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
