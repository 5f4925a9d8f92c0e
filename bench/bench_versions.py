"""What each shipped version of a spectrum model costs: raw ONNX Runtime spectra/s, versions
alternated round by round in one process so that a busy machine slows all of them alike.

    .venv/bin/python -m bench.bench_versions [--versions 2 4 5] [--rounds 7] [--batch 256]

The input is the service's own preprocessing of the real SDSS spectrum
(../shared/data/sdss/spec-1198-52669-0063.fits) with independent noise per row, so the
in-graph redshift fit sees a real continuum. Sessions use the service's options
(service.inference.runner.session_options: 2 intra-op threads unless --threads, spinning off).
Prints medians and each version's ratio to the first one named.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import onnxruntime as ort

from service.inference.runner import session_options
from service.spectra import Source, preprocess, read_spectra

from .common import REPO_ROOT, SDSS, exposure_fibres


def inputs(batch: int) -> np.ndarray:
    _, (spectrum,) = read_spectra(Source.from_path(SDSS))
    fibres = exposure_fibres(spectrum, batch, np.random.default_rng(0))
    return np.stack([preprocess(f).x for f in fibres])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="spectrum_classifier")
    ap.add_argument("--versions", type=int, nargs="+", default=[2, 4, 5])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    root = REPO_ROOT / "models" / args.model
    sessions = {v: ort.InferenceSession(str(root / str(v) / "model.onnx"),
                                        session_options(args.threads),
                                        providers=["CPUExecutionProvider"])
                for v in args.versions}
    x = inputs(args.batch)
    rates: dict[int, list[float]] = {v: [] for v in sessions}
    for s in sessions.values():
        s.run(None, {"spectrum": x})  # warm-up
    for _ in range(args.rounds):
        for v, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"spectrum": x})
            rates[v].append(args.batch / (time.perf_counter() - t))
    first = statistics.median(rates[args.versions[0]])
    print(f"{args.model}, batch {args.batch}, {args.threads} intra-op threads, {args.rounds} "
          f"rounds, load average {os.getloadavg()[0]:.2f}")
    print("| version | spectra/s (median) | ratio to v%d |" % args.versions[0])
    print("|---|---|---|")
    for v in args.versions:
        m = statistics.median(rates[v])
        print(f"| {v} | {m:,.0f} | {m / first:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
