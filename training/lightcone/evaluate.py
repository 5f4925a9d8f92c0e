"""Held-out evaluation of the exported model, through ONNX Runtime (what the service runs).

Per parameter: R² of the mean, 68% and 95% central-interval coverage of N(mean, σ²) (ideal
0.68 / 0.95), mean σ relative to the prior width, and the Gaussian NLL. A "prior" baseline
(predict the prior mean, σ = prior std) anchors the numbers: R² 0, NLL of a flat guess. With a
small test set the coverages carry binomial errors of ±sqrt(p(1−p)/n); the report states n.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from service.lightcones import LightconeGrid
from service.lightcones.preprocess import normalise

from .config import LightconeConfig
from .export_onnx import run_onnx
from .noise import observe, wedge_remove
from .train import prior_arrays

Z68, Z95 = 1.0, 1.959964


def metrics(theta: np.ndarray, mean: np.ndarray, sigma: np.ndarray, cfg: LightconeConfig
            ) -> dict[str, dict[str, float]]:
    low, high = prior_arrays(cfg)
    out = {}
    for k, name in enumerate(cfg.param_names):
        t, m, s = theta[:, k], mean[:, k], sigma[:, k]
        ss_res = float(np.sum((t - m) ** 2))
        ss_tot = float(np.sum((t - t.mean()) ** 2))
        z = np.abs(t - m) / s
        w = high[k] - low[k]
        out[name] = {
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            "rmse": math.sqrt(ss_res / len(t)),
            "rmse_over_prior_width": math.sqrt(ss_res / len(t)) / w,
            "coverage_68": float(np.mean(z <= Z68)),
            "coverage_95": float(np.mean(z <= Z95)),
            "mean_sigma_over_prior_width": float(np.mean(s) / w),
            "nll_norm": float(np.mean(0.5 * z**2 + np.log(s / w) + 0.5 * math.log(2 * math.pi))),
            "prior_baseline_nll_norm": float(np.mean(0.5 * ((t - (low[k] + high[k]) / 2)
                                                            / (w / math.sqrt(12))) ** 2
                                                     + math.log(1 / math.sqrt(12))
                                                     + 0.5 * math.log(2 * math.pi))),
        }
    return out


def evaluate(cfg: LightconeConfig, model_dir: Path, x_test: np.ndarray, theta_test: np.ndarray,
             extra: dict[str, Any], log=print) -> dict[str, Any]:
    outs = run_onnx(model_dir / "model.onnx", x_test) if len(x_test) else None
    report: dict[str, Any] = {"model": cfg.name, "version": cfg.version, "n_test": len(x_test),
                              **extra}
    if outs is not None:
        report["per_parameter"] = metrics(theta_test, outs["theta_mean"], outs["theta_sigma"], cfg)
    report.setdefault("noise", "not evaluated")
    (model_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (model_dir / "report.md").write_text(markdown(report, cfg))
    for name, m in report.get("per_parameter", {}).items():
        log(f"{name:15s} R² {m['r2']:+.3f}  cov68 {m['coverage_68']:.2f}  "
            f"cov95 {m['coverage_95']:.2f}  σ/width {m['mean_sigma_over_prior_width']:.3f}")
    return report


def model_contract(model_dir: Path) -> tuple[LightconeGrid, str]:
    """The grid and preprocess version a shipped model declares (so v2 and v3 can be run on
    the same cubes, each with its own preprocessing)."""
    m = json.loads((model_dir / "manifest.json").read_text())
    return LightconeGrid.from_manifest(m["grid"]), m["preprocess_version"]


def evaluate_noisy(cfg: LightconeConfig, model_dir: Path, cubes_mk: np.ndarray,
                   theta: np.ndarray, noise, log=print, *, reps: int | None = None,
                   wedge: bool | None = None, seed: int | None = None) -> dict[str, Any]:
    """Test cubes (model grid, mK) observed ``reps`` times each with thermal noise (noise.py;
    each channel's mean removed, the wedge removed if ``wedge``) through the exported model,
    preprocessed by the model's own manifest version."""
    grid, version = model_contract(model_dir)
    reps = reps or cfg.noise.eval_realisations
    wedge = cfg.noise.wedge if wedge is None else wedge
    rng = np.random.default_rng(cfg.noise.seed if seed is None else seed)
    x = np.empty((len(cubes_mk) * reps, *grid.shape), dtype=np.float32)
    for i, c in enumerate(np.repeat(cubes_mk, reps, axis=0)):
        x[i] = normalise(observe(c, grid, noise, rng, wedge=wedge, omm=cfg.noise.wedge_omm),
                         grid, version)[0]
    outs = run_onnx(model_dir / "model.onnx", x)
    return {"per_parameter": metrics(np.repeat(theta, reps, axis=0), outs["theta_mean"],
                                     outs["theta_sigma"], cfg),
            "n_cubes": len(cubes_mk), "realisations_per_cube": reps,
            "obs_time_h": noise.obs_time_h if noise is not None else 0.0, "wedge": wedge,
            "preprocess_version": version}


def wedge_power_kept(cfg: LightconeConfig, cubes_mk: np.ndarray, n: int = 12
                     ) -> dict[str, Any]:
    """Fraction of the fluctuation power (each channel's mean removed) of simulated cubes that
    survives wedge removal on the model grid (noise.wedge_remove): the number behind
    ``NoiseConfig.wedge`` being off."""
    grid = cfg.grid.model_grid()
    out = {}
    for chunk in (None, 128):
        kept, tot = 0.0, 0.0
        for c in cubes_mk[:n]:
            c = c - c.mean(axis=(0, 1), keepdims=True)
            w = wedge_remove(c, grid, cfg.noise.wedge_omm, chunk_cells=chunk)
            kept += float((w.astype(np.float64) ** 2).sum())
            tot += float((c.astype(np.float64) ** 2).sum())
        out[f"chunk_{chunk or grid.n_xy}"] = kept / tot
    return {"n_cubes": min(n, len(cubes_mk)), "power_kept": out,
            "note": "fluctuation power after / before rolling wedge removal on 4 Mpc cubic "
                    "cells, binned back to the model grid; chunk = tools21cm chunk_length"}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    pp = report.get("per_parameter", {})
    return {"n_test": report["n_test"],
            "r2": {k: round(v["r2"], 4) for k, v in pp.items()},
            "coverage_68": {k: round(v["coverage_68"], 3) for k, v in pp.items()},
            "coverage_95": {k: round(v["coverage_95"], 3) for k, v in pp.items()}}


def markdown(report: dict[str, Any], cfg: LightconeConfig) -> str:
    n = report["n_test"]
    lines = [f"# {cfg.name} v{cfg.version} — evaluation on held-out simulations", "",
             (f"Test lightcones: **{n}** (21cmFAST v4, noiseless). Dataset: "
              f"{report.get('dataset', {}).get('accepted', '?')} accepted of "
              f"{report.get('dataset', {}).get('attempted', '?')} attempted runs "
              f"(train {report.get('n_train', '?')}, val {report.get('n_val', '?')}). "
              f"Training time {report.get('train_seconds', 0):.0f} s on "
              f"{report.get('threads', '?')} CPU threads."), "",
             ("| parameter | R² | 68% cov. | 95% cov. | mean σ / prior width | RMSE / prior width |"
              " NLL (prior baseline) |"), "|---|---|---|---|---|---|---|"]
    for name, m in report.get("per_parameter", {}).items():
        lines.append(f"| {name} | {m['r2']:.3f} | {m['coverage_68']:.2f} | "
                     f"{m['coverage_95']:.2f} | {m['mean_sigma_over_prior_width']:.3f} | "
                     f"{m['rmse_over_prior_width']:.3f} | {m['nll_norm']:.2f} "
                     f"({m['prior_baseline_nll_norm']:.2f}) |")
    if n:
        e68 = math.sqrt(0.68 * 0.32 / n)
        e95 = math.sqrt(0.95 * 0.05 / n)
        lines += ["", f"Binomial 1σ on coverage at n = {n}: ±{e68:.2f} (68%), ±{e95:.2f} (95%)."]
    noisy = report.get("noise")
    if isinstance(noisy, dict) and "per_parameter" in noisy:
        trained = "trained with noise" if cfg.noise.train else "trained noiseless"
        lines += ["", (f"## With SKA1-Low thermal noise ({cfg.noise.subarray}, "
                       f"{noisy['obs_time_h']:g} h, tools21cm), "
                       f"{'with' if noisy['wedge'] else 'without'} foreground-wedge removal — "
                       f"model {trained}"), "",
                  (f"{noisy['n_cubes']} test cubes × {noisy['realisations_per_cube']} noise "
                   "realisations; each channel's sky mean removed (not measured by an "
                   "interferometer)."), "",
                  ("| parameter | R² | 68% cov. | 95% cov. | mean σ / prior width | "
                  "NLL (prior baseline) |"), "|---|---|---|---|---|---|"]
        for name, m in noisy["per_parameter"].items():
            lines.append(f"| {name} | {m['r2']:.3f} | {m['coverage_68']:.2f} | "
                         f"{m['coverage_95']:.2f} | {m['mean_sigma_over_prior_width']:.3f} | "
                         f"{m['nll_norm']:.2f} ({m['prior_baseline_nll_norm']:.2f}) |")
    else:
        lines += ["", f"With noise: {noisy}"]
    sweep = report.get("obs_time_sweep")
    if sweep:
        names = list(next(iter(sweep.values()))["per_parameter"])
        lines += ["", "## R² against observing time (same model, noise ∝ 1/√t)", "",
                  "| hours | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for t, r in sweep.items():
            lines.append(f"| {t} | " + " | ".join(f"{r['per_parameter'][n]['r2']:.3f}"
                                                  for n in names) + " |")
    wp = report.get("wedge")
    if isinstance(wp, dict):
        lines += ["", ("Foreground wedge: of the simulated fluctuation power, "
                       + ", ".join(f"{v:.1e} ({k.replace('_', ' ')} cells)"
                                   for k, v in wp["power_kept"].items())
                       + f" survives wedge removal on this grid ({wp['n_cubes']} test cubes); "
                       "see docs/lightcones.md.")]
    for label, other in (report.get("compare") or {}).items():
        lines += ["", f"## {label}", "", "| parameter | R² | 68% cov. | 95% cov. | NLL |",
                  "|---|---|---|---|---|"]
        for name, m in other["per_parameter"].items():
            lines.append(f"| {name} | {m['r2']:.3f} | {m['coverage_68']:.2f} | "
                         f"{m['coverage_95']:.2f} | {m['nll_norm']:.2f} |")
    instrument = ("instrument effects beyond thermal noise (foregrounds, beam, calibration)"
                  if cfg.noise.train else "instrument effects")
    lines += ["",
              ("Not modelled: m_WDM (21cmFAST v4 has no variable WDM mass; all training data "
               f"are cold dark matter), {instrument}, minihaloes. See docs/lightcones.md."),
              ""]
    return "\n".join(lines)
