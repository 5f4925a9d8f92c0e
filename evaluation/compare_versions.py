"""Served versions side by side on one simulated test set and on every reachable real spectrum.

    python -m evaluation.compare_versions --config training/configs/spectra_v3.json \
        --version 2 --version 3 > /tmp/compare.md

Why: "serve v3 by default only when it beats v2" needs both measured the same way, on the
same spectra, through the graphs the service runs (model.onnx, with whatever redshift it
computes), per population — the failures on the real sky were populations (starbursts called
QSO, nearby galaxies called STAR), which one overall accuracy hides. The simulated set is the
config's test split (never used for training, temperature or σ_z calibration).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from training.spectra.calibrate import ece
from training.spectra.config import load_config
from training.spectra.evaluate import redshift_metrics
from training.spectra.export_onnx import run_onnx
from training.spectra.labels import TOP_OF_LABEL
from training.spectra.measures import top_probs
from training.spectra.populations import population_masks
from training.spectra.simulate import generate

from .real_spectra import classify_real, markdown

TOP = np.asarray(TOP_OF_LABEL)
SNR_BINS = ((0.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, 10.0), (10.0, np.inf))


def scores(out: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Top-class accuracy overall and per population, top-class ECE, redshift by true class."""
    tp = top_probs(out["probs"])
    y = TOP[data["label"]]
    right = tp.argmax(1) == y
    pops = {name: (float(right[m].mean()), int(m.sum()))
            for name, m in population_masks(data, TOP).items() if m.any()}
    conf = tp.max(1)

    def z_of(m: np.ndarray) -> dict[str, Any]:
        return redshift_metrics(data["z"][m], out["z"][m], out["z_sigma"][m], y[m])

    every = np.ones(len(y), bool)
    return {"accuracy_top": float(right.mean()), "populations": pops,
            "ece_top": ece(tp, y, 10),
            "wrong_above_0.99": int(((conf > 0.99) & ~right).sum()),
            "redshift": z_of(every),
            # what a pipeline that trusts only z_warning = 0 gets (SDSS's ZWARNING contract)
            "redshift_unflagged": z_of(out["z_warning"] == 0) if "z_warning" in out else {},
            "redshift_by_snr": {f"{lo:g}–{hi:g}": z_of((data["snr"] >= lo) & (data["snr"] < hi))
                                for lo, hi in SNR_BINS}}


def render(config: str, results: dict[int, dict[str, Any]], n: int) -> str:
    vs = sorted(results)
    head = "| | " + " | ".join(f"v{v}" for v in vs) + " |\n|---|" + "---|" * len(vs)
    intro = (f"Simulated test split of `{config}` ({n} spectra), through each version's "
             "model.onnx.")
    lines = [intro, "", head]
    lines.append("| top-class accuracy | " + " | ".join(
        f"{results[v]['accuracy_top']:.4f}" for v in vs) + " |")
    lines.append("| top-class ECE (10 bins) | " + " | ".join(
        f"{results[v]['ece_top']:.4f}" for v in vs) + " |")
    lines.append("| wrong answers at P > 0.99 | " + " | ".join(
        str(results[v]["wrong_above_0.99"]) for v in vs) + " |")
    for pop in results[vs[0]]["populations"]:
        cells = []
        for v in vs:
            acc, k = results[v]["populations"][pop]
            cells.append(f"{acc:.3f} (n={k})")
        lines.append(f"| {pop} | " + " | ".join(cells) + " |")
    for cls in ("GALAXY", "QSO", "STAR"):
        for key, label in (("sigma_nmad", "σ_NMAD"), ("outlier_fraction", "outliers"),
                           ("within_1sigma", "1σ coverage")):
            cells = [f"{results[v]['redshift'].get(cls, {}).get(key, float('nan')):.3g}"
                     for v in vs]
            lines.append(f"| {cls} z {label} | " + " | ".join(cells) + " |")
    for cls in ("GALAXY", "QSO"):
        cells = []
        for v in vs:
            m = results[v]["redshift_unflagged"].get(cls)
            cells.append(f"{m['outlier_fraction']:.3g} (n={m['n']})" if m else "—")
        lines.append(f"| {cls} z outliers where z_warning = 0 | " + " | ".join(cells) + " |")
        for b in results[vs[0]]["redshift_by_snr"]:
            cells = [f"{results[v]['redshift_by_snr'][b].get(cls, {}).get('outlier_fraction', float('nan')):.3g}"
                     for v in vs]
            lines.append(f"| {cls} z outliers, S/N {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--repository", default="models")
    ap.add_argument("--model", default="spectrum_classifier")
    ap.add_argument("--version", type=int, action="append", required=True)
    ap.add_argument("--n", type=int, default=0, help="test spectra (default: the config's)")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    n = a.n or cfg.data.n_test
    data = generate(cfg.sim, n, cfg.seed, "test", workers=cfg.data.workers,
                    cache_dir=a.data_dir, progress=False)
    results = {v: scores(run_onnx(Path(a.repository) / a.model / str(v) / "model.onnx",
                                  data["x"]), data) for v in a.version}
    print(render(a.config, results, n))
    for v in a.version:
        print(f"\nReal spectra, v{v}:\n")
        print(markdown(classify_real(a.repository, a.model, v)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
