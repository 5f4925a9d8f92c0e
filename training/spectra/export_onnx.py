"""Export the calibrated ensemble as ONE ONNX graph + its manifest, straight into ``models/``.

The graph takes ``spectrum`` (N, 2, npix) float32 — exactly ``service.spectra.preprocess``
output — and returns the contract outputs of models/README.md (probs, entropy, epistemic, z,
z_sigma) with a dynamic batch axis; temperature and the redshift-σ scale are constants inside
it. Export is checked against PyTorch on real preprocessed inputs and the max abs difference is
written to the manifest.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from service.spectra import DEFAULT_GRID, PREPROCESS_VERSION

from ..common.float32_bounds import forward_tol, rel_tol
from ..common.manifest import git_commit, sha256_file, write_manifest
from .conv2d import rewrite_in_place
from .labels import LABELS, TOP_CLASSES
from .model import OUTPUT_NAMES, Ensemble

OPSET = 18


def export_graph(ens: Ensemble, path: Path, npix: int) -> None:
    ens = ens.eval()
    x = torch.zeros(2, 2, npix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ens, (x,), str(path), input_names=["spectrum"], output_names=OUTPUT_NAMES,
            dynamic_shapes={"spectrum": {0: torch.export.Dim("batch", min=1, max=65536)}},
            opset_version=OPSET, external_data=False, dynamo=True, verbose=False,
        )
    # 1-D Convs as 2-D ones: ~2x faster in ORT on CPU, same numbers (training/spectra/conv2d.py);
    # the parity check against PyTorch below covers the rewritten graph
    rewrite_in_place(path)


def run_onnx(path: Path, x: np.ndarray, threads: int = 2, batch: int = 512) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {"spectrum": x[s:s + batch].astype(np.float32)})
            for s in range(0, len(x), batch)]
    names = [o.name for o in sess.get_outputs()]
    return {n: np.concatenate([o[i] for o in outs]) for i, n in enumerate(names)}


@torch.no_grad()
def run_torch(ens: Ensemble, x: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    outs = [ens(torch.from_numpy(x[s:s + batch].astype(np.float32)))
            for s in range(0, len(x), batch)]
    return {n: np.concatenate([o[i].numpy() for o in outs]) for i, n in enumerate(OUTPUT_NAMES)}


def parity(ens: Ensemble, path: Path, x: np.ndarray) -> dict[str, float]:
    """Max |ORT − PyTorch| per output on the same preprocessed input."""
    a, b = run_onnx(path, x), run_torch(ens, x)
    return {n: float(np.max(np.abs(a[n] - b[n]))) for n in OUTPUT_NAMES}


@torch.no_grad()
def output_tolerances(ens: Ensemble, x: np.ndarray, sides: int = 2) -> dict[str, np.ndarray]:
    """Per element of each output, how far two float32 evaluations of ``ens`` on ``x`` (ONNX
    Runtime and PyTorch: ``sides`` = 2) may differ by rounding alone.

    Each member's raw outputs (logits/T, and μ, log σ² of ln(1+z)) err by r = forward_tol of
    its layers relative to their size (training/common/float32_bounds.py): δ_l = r·max|logits/T| and
    δ_r = r·max(|μ|, |log σ²|) per spectrum, over the members. ρ = the ensemble's own
    reductions (mean over M members, softmax and entropy sums over K labels). Then, to first
    order:
    - probs: softmax moves p_i by p_i·(Δl_i − Σ_j p_j·Δl_j), so |Δq_i| ≤ (2δ_l + ρ)·q_i;
    - entropy: ΔH = −Σ (log q_i + 1)·Δq_i and Σ q_i·|log q_i| = H, so ≤ 2δ_l·H + ρ·(1 + H)
      (the 1: Σ Δq_i is zero only to rounding);
    - epistemic = H(q) − mean_m H(p_m), with mean_m H(p_m) ≤ H(q): ≤ 4δ_l·H + 2ρ·(1 + H);
    - z = exp(μ̄) − 1: ≤ (1 + z)·(δ_r + ρ);
    - z_sigma = s·(1+z)·σ_t, σ_t² = mean σ_m² + var_m μ_m: Δ mean σ² ≤ δ_r·σ_t² and
      Δ var μ ≤ mean 2|μ_m − μ̄|·2δ_r ≤ 4δ_r·σ_t, so Δσ_t ≤ δ_r·σ_t/2 + 2δ_r and
      |Δz_sigma| ≤ (1.5·z_sigma + 2s·(1 + z))·δ_r + ρ·z_sigma.
    """
    ens = ens.eval()
    xt = torch.from_numpy(x.astype(np.float32))
    r = forward_tol(ens.members[0], sides=sides)
    k = ens.members[0].cls.out_features
    rho = rel_tol([len(ens.members), k, k], sides)
    raw = [m(xt) for m in ens.members]
    logits = torch.stack([o[0] for o in raw]).abs().amax(dim=(0, 2)) / ens.temperature
    reg = torch.stack([torch.maximum(o[1].abs(), o[2].abs()) for o in raw]).amax(0)
    d_l, d_r = (r * logits.double()).numpy(), (r * reg.double()).numpy()
    probs, entropy, _, z, z_sigma = (t.double().numpy() for t in ens(xt))
    s = float(ens.z_sigma_scale)
    return {"probs": (2 * d_l + rho)[:, None] * probs,
            "entropy": 2 * d_l * entropy + rho * (1 + entropy),
            "epistemic": 4 * d_l * entropy + 2 * rho * (1 + entropy),
            "z": (1 + z) * (d_r + rho),
            "z_sigma": (1.5 * z_sigma + 2 * s * (1 + z)) * d_r + rho * z_sigma}


def manifest_io(n_labels: int, npix: int) -> tuple[list[dict], list[dict]]:
    inputs = [{"name": "spectrum", "dtype": "float32", "shape": [-1, 2, npix]}]
    outputs = [{"name": "probs", "dtype": "float32", "shape": [-1, n_labels]}] + [
        {"name": n, "dtype": "float32", "shape": [-1]} for n in OUTPUT_NAMES[1:]
    ]
    return inputs, outputs


def export(ens: Ensemble, out_dir: Path, cfg_dict: dict[str, Any], *, parity_x: np.ndarray,
           data_description: str, training_extra: dict[str, Any] | None = None,
           repo: Path | None = None) -> dict[str, Any]:
    """Write model.onnx + manifest.json into ``out_dir``; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    export_graph(ens, path, DEFAULT_GRID.npix)
    diffs = parity(ens, path, parity_x)
    inputs, outputs = manifest_io(len(LABELS), DEFAULT_GRID.npix)
    repo = repo or Path(__file__).resolve().parents[2]
    manifest = {
        "name": cfg_dict["name"],
        "version": int(cfg_dict["version"]),
        "kind": "spectrum-classifier",
        "file": "model.onnx",
        "sha256": sha256_file(path),
        "inputs": inputs,
        "outputs": outputs,
        "labels": LABELS,
        "top_classes": TOP_CLASSES,
        "grid": DEFAULT_GRID.to_manifest(),
        "preprocess_version": PREPROCESS_VERSION,
        "ensemble": {"members": len(ens.members),
                     "temperature": float(ens.temperature),
                     "z_sigma_scale": float(ens.z_sigma_scale),
                     "opset": OPSET},
        "parity": {"max_abs_diff": max(diffs.values()), "per_output": diffs,
                   "n_spectra": len(parity_x)},
        "training": {
            "config": cfg_dict,
            "seed": int(cfg_dict["seed"]),
            "data": data_description,
            "git_commit": git_commit(repo, "training"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(training_extra or {}),
        },
        "metrics": {},
    }
    write_manifest(out_dir, manifest)
    return manifest
