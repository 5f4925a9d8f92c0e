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

from .config import LightconeConfig
from .export_onnx import run_onnx
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


def evaluate_noisy(cfg: LightconeConfig, model_dir: Path, cubes_ds: np.ndarray,
                   theta: np.ndarray, cache_dir: Path, log=print) -> dict[str, Any]:
    """The same test cubes observed with SKA1-Low noise + wedge removal (noise.py), through
    the same model (trained noiseless): how much survives a realistic observation."""
    import time

    from service.lightcones import make_lightcone, resample
    from service.lightcones.preprocess import normalise

    from .noise import observe, uv_maps

    t0 = time.time()
    uvs = uv_maps(cfg, cache_dir, log)
    t_uv = time.time() - t0
    ds, grid = cfg.grid.dataset_grid(), cfg.grid.model_grid()
    rng = np.random.default_rng(cfg.noise.seed)
    names = cfg.param_names
    x = np.empty((len(cubes_ds), *grid.shape), dtype=np.float32)
    for i, c in enumerate(cubes_ds):
        lc = make_lightcone(c.astype(np.float32), frequencies_mhz=ds.frequencies_mhz,
                            cell_mpc=ds.cell_mpc)
        cube, _ = resample(lc, grid)
        x[i] = normalise(observe(cube, cfg, uvs, rng, omm=float(theta[i, names.index("OMm")])),
                         grid)
    outs = run_onnx(model_dir / "model.onnx", x)
    return {"per_parameter": metrics(theta, outs["theta_mean"], outs["theta_sigma"], cfg),
            "setup": {**cfg.noise.__dict__, "uv_seconds": round(t_uv, 1),
                      "note": "model trained on noiseless cubes; noise + wedge applied to the "
                              "test cubes only"}}


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
        nc = noisy["setup"]
        wedge = "with" if nc["wedge"] else "WITHOUT"
        lines += ["", (f"## With SKA1-Low thermal noise ({nc['subarray']}, {nc['obs_time_h']:g} h, "
                       f"tools21cm), {wedge} foreground-wedge removal — model trained noiseless"),
                  "",
                  "| parameter | R² | 68% cov. | 95% cov. |", "|---|---|---|---|"]
        for name, m in noisy["per_parameter"].items():
            lines.append(f"| {name} | {m['r2']:.3f} | {m['coverage_68']:.2f} | "
                         f"{m['coverage_95']:.2f} |")
    else:
        lines += ["", f"With noise: {noisy}"]
    lines += ["",
              ("Not modelled: m_WDM (21cmFAST v4 has no variable WDM mass; all training data "
               "are cold dark matter), instrument effects, minihaloes. See docs/lightcones.md."),
              ""]
    return "\n".join(lines)
