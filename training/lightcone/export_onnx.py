"""Export the calibrated regressor as one ONNX graph + manifest, straight into ``models/``.

The graph takes ``lightcone`` (N, 1, n_xy, n_xy, n_los) float32 — exactly
``service.lightcones.preprocess`` output — and returns ``theta_mean`` and ``theta_sigma`` (N, n_params) in
physical units (prior de-normalisation and the σ calibration are constants in the graph). The
batch axis is dynamic; parity with PyTorch is checked at batch sizes 1 and N on real inputs and
written to the manifest. The manifest is the contract (models/README.md, "Lightcone
regressor").
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from ..common.float32_bounds import U32, forward_tol
from ..common.manifest import git_commit, sha256_file, write_manifest
from .config import LightconeConfig, config_to_dict
from .model import OUTPUT_NAMES, LightconeNet, PhysicalHead
from .train import prior_arrays

OPSET = 18
INPUT_NAME = "lightcone"
KIND = "lightcone-regressor"
NOT_MODELLED = {
    "m_WDM": "21cmPIE-Net's warm-dark-matter mass is not inferred: 21cmFAST v4 has no variable "
             "WDM mass, so every training lightcone is cold dark matter. A WDM universe is out "
             "of distribution for this model.",
    "instrument": "no thermal noise, beam, foregrounds or foreground-wedge removal: trained on "
                  "noiseless simulated brightness temperature",
    "astrophysics": "constant ionising efficiency ζ above a T_vir threshold (21cmFAST "
                    "const-zeta); no minihaloes, no inhomogeneous recombinations",
}


def not_modelled(cfg: LightconeConfig) -> dict[str, str]:
    out = dict(NOT_MODELLED)
    if cfg.noise.train:
        out["instrument"] = (
            "trained with SKA1-Low thermal noise only (see 'noise'): no beam, no foregrounds "
            "(the data are assumed foreground-subtracted), no foreground-wedge removal, no "
            "calibration errors; a noisier or cleaner observation than the stated one is out "
            "of distribution")
    return out


def noise_manifest(cfg: LightconeConfig) -> dict[str, Any]:
    nc = cfg.noise
    if not nc.train:
        return {"trained_with_noise": False}
    return {"trained_with_noise": True,
            "model": "tools21cm thermal noise (noise_map: natural weighting, Blackman-Harris "
                     "uv taper), a fresh realisation per training cube and step",
            "telescope": f"SKA1-Low {nc.subarray}", "obs_time_h": nc.obs_time_h,
            "train_obs_time_range_h": nc.train_obs_time_range_h or [nc.obs_time_h] * 2,
            "daily_track_h": nc.total_int_time_h, "visibility_int_time_s": nc.int_time_s,
            "declination_deg": nc.declination_deg, "uv_redshifts": nc.n_uv_redshifts,
            "channel_mean_removed": cfg.grid.preprocess_version == "lightcone-2",
            "foreground_wedge_removed": nc.wedge,
            "expected_input": "an observation on the model grid (mK) with thermal noise of an "
                              "observing time within train_obs_time_range_h (log-uniform in "
                              "training); the service removes each channel's sky mean itself"}


def physical_head(net: LightconeNet, cfg: LightconeConfig, scale: np.ndarray) -> PhysicalHead:
    low, high = prior_arrays(cfg)
    return PhysicalHead(net, torch.tensor(low), torch.tensor(high),
                        torch.tensor(scale)).eval()


def export_graph(head: PhysicalHead, path: Path, shape: tuple[int, ...]) -> None:
    x = torch.zeros(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head, (x,), str(path), input_names=[INPUT_NAME], output_names=OUTPUT_NAMES,
            dynamic_shapes={"lightcone": {0: torch.export.Dim("batch", min=1, max=4096)}},
            opset_version=OPSET, external_data=False, dynamo=True, verbose=False)


def run_onnx(path: Path, x: np.ndarray, threads: int = 2) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = sess.run(OUTPUT_NAMES, {INPUT_NAME: x.astype(np.float32)})
    return dict(zip(OUTPUT_NAMES, outs))


@torch.no_grad()
def run_torch(head: PhysicalHead, x: np.ndarray) -> dict[str, np.ndarray]:
    mean, sigma = head(torch.from_numpy(x.astype(np.float32)))
    return dict(zip(OUTPUT_NAMES, (mean.numpy(), sigma.numpy())))


@torch.no_grad()
def sky_cells(net: LightconeNet, shape: tuple[int, ...]) -> int:
    """Cells the forward pass averages over the sky: a reduction outside the layers."""
    return math.prod(net.features(torch.zeros(1, *shape)).shape[2:4])


@torch.no_grad()
def width_tol(head: PhysicalHead, x: np.ndarray, sides: int = 2) -> float:
    """How far two float32 evaluations of ``head`` on ``x`` (ONNX Runtime and PyTorch, or
    two batch sizes: ``sides`` = 2) may differ in |Δ output| / prior width by rounding alone.

    The layers' error (forward_tol, training/common/float32_bounds.py, plus the sky mean) is relative
    to the normalised outputs the net computes (μ, log σ; σ/width carries the log σ error times
    itself), plus one float32 rounding of the physical mean (low + width·μ) per side."""
    mean, sigma = (t.numpy().astype(np.float64) for t in head(torch.from_numpy(x)))
    width, low = head.width.numpy(), head.low.numpy()
    sig_w = sigma / width
    log_sig = np.log(sig_w / head.sigma_scale.numpy())
    scale = max(1.0, np.abs((mean - low) / width).max(), (np.abs(log_sig) * sig_w).max())
    rel = forward_tol(head.net, [sky_cells(head.net, x.shape[1:])], sides)
    return float(rel * scale + sides * U32 * np.abs(mean / width).max())


def parity(head: PhysicalHead, path: Path, x: np.ndarray) -> dict[str, Any]:
    """Max |ORT − torch| per output at batch 1 and the full batch (the dynamic axis), in
    physical units and relative to each parameter's prior width (units differ by 10⁴), with
    the float32 rounding :func:`width_tol` allows for the latter."""
    out: dict[str, Any] = {}
    width = head.width.numpy()
    rel = 0.0
    for label, xb in (("batch_1", x[:1]), (f"batch_{len(x)}", x)):
        a, b = run_onnx(path, xb), run_torch(head, xb)
        out[label] = {n: float(np.max(np.abs(a[n] - b[n]))) for n in OUTPUT_NAMES}
        rel = max(rel, *(float(np.max(np.abs(a[n] - b[n]) / width)) for n in OUTPUT_NAMES))
    out["max_abs_diff"] = max(v for d in out.values() if isinstance(d, dict) for v in d.values())
    out["max_diff_over_prior_width"] = rel
    out["tolerance_over_prior_width"] = width_tol(head, x)
    out["n_cubes"] = len(x)
    return out


def parameters_manifest(cfg: LightconeConfig) -> list[dict[str, Any]]:
    return [{"name": n, **cfg.sim.priors[n], "prior": "uniform"} for n in cfg.param_names]


def export(net: LightconeNet, cfg: LightconeConfig, scale: np.ndarray, out_dir: Path, *,
           parity_x: np.ndarray, training_extra: dict[str, Any] | None = None,
           repo: Path | None = None) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    grid = cfg.grid.model_grid()
    head = physical_head(net, cfg, scale)
    export_graph(head, path, grid.shape)
    p = parity(head, path, parity_x)
    n = len(cfg.param_names)
    repo = repo or Path(__file__).resolve().parents[2]
    manifest = {
        "name": cfg.name,
        "version": int(cfg.version),
        "kind": KIND,
        "file": "model.onnx",
        "sha256": sha256_file(path),
        "inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": [-1, *grid.shape]}],
        "outputs": [{"name": o, "dtype": "float32", "shape": [-1, n]} for o in OUTPUT_NAMES],
        "parameters": parameters_manifest(cfg),
        "grid": grid.to_manifest(),
        "preprocess_version": cfg.grid.preprocess_version,
        "resample": {"allowed": True,
                     "note": "cubes with a line-of-sight axis and a cell size are resampled "
                             "onto the grid (overlap averaging) and cropped on the sky; cubes "
                             "without axes must have exactly the grid's shape"},
        "normalisation": {
            "input": (f"x = clip((T_b − ⟨T_b⟩_sky per channel)[mK] / {grid.scale_mk:g}, ±clip)"
                      if cfg.grid.preprocess_version == "lightcone-2" else
                      f"x = clip(T_b[mK] / {grid.scale_mk:g}, ±clip) on the grid"),
            "parameters": "trained on (θ − low)/(high − low); the graph outputs physical units",
        },
        "calibration": {"sigma_scale": [float(s) for s in scale],
                        "method": "per-parameter σ multiplier s² = mean(z²) on validation"},
        "not_modelled": not_modelled(cfg),
        "noise": noise_manifest(cfg),
        "parity": p,
        "opset": OPSET,
        "training": {
            "config": config_to_dict(cfg),
            "seed": int(cfg.seed),
            "git_commit": git_commit(repo, "training/lightcone", "service/lightcones"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(training_extra or {}),
        },
        "metrics": {},
    }
    write_manifest(out_dir, manifest)
    return manifest
