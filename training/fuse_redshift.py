"""Give a classifier version the in-graph template-fit redshift: fuse, calibrate σ_z, write.

    python -m training.fuse_redshift models/spectrum_classifier/3 \
        --config training/configs/spectra_v3.json --n-calib 2000

Why a step of its own: the χ² fit (training/redshift_graph.py) has no trained weights, so it
is added to an exported classifier graph rather than trained with it; only its σ_z needs data.
The curvature σ assumes exact templates, which the real sky (and our simulator) do not have,
so σ is inflated by √(χ²/dof) and then scaled per class until 68 % of simulated validation
spectra of that class fall within 1σ (``fit_sigma_scale``). The calibration spectra are the
training config's validation split, never the test split the report is computed on.

The version directory is rewritten in place: ``model.onnx`` becomes the fused graph,
``manifest.json`` gains the outputs ``z_warning`` (int32), ``z_rchi2``, ``z_galaxy``,
``z_qso``, ``z_chi2_galaxy``, ``z_chi2_qso``, ``z_network``, ``z_sigma_network`` and a
``redshift`` block (method, search configuration, calibration), and its sha256 is updated.
A version that already has a ``redshift`` block is refused (fusing twice would nest graphs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .config import load_config
from .export_onnx import run_onnx
from .manifest import sha256_file
from .redshift_graph import RedshiftGraphConfig, fit_sigma_scale, fuse_with_classifier
from .simulate import TOP_CLASSES, TOP_OF_LABEL, generate

FIT_CLASSES = ("GALAXY", "QSO")
TELLURIC_BANDS = ((6860.0, 6900.0), (7590.0, 7710.0))  # O₂ B and A (vacuum Å), with margins
OUTPUT_DTYPES = {"z_warning": "int32"}  # every other added output is float32


def calibration_set(config: str | Path, n: int, data_dir: Path | None) -> dict[str, np.ndarray]:
    cfg = load_config(config)
    return generate(cfg.sim, n, cfg.seed, "val", workers=cfg.data.workers,
                    cache_dir=data_dir, progress=False)


def scales(outputs: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per class, the σ scale fitted on spectra of that class *that the network also puts in
    that class* (the z a user sees comes from the fit of the predicted class)."""
    true_top = np.asarray(TOP_OF_LABEL)[data["label"]]
    out: dict[str, Any] = {}
    for c in FIT_CLASSES:
        k = TOP_CLASSES.index(c)
        sel = (true_top == k) & (outputs["z_warning"] & 4 == 0)
        z, s, zt = outputs["z"][sel], outputs["z_sigma"][sel], data["z"][sel]
        scale = fit_sigma_scale(z, s, zt)
        inside = float(np.mean(np.abs(z - zt) <= scale * s)) if sel.any() else float("nan")
        out[c] = {"scale": scale, "n": int(sel.sum()), "coverage_after": inside,
                  "coverage_before": float(np.mean(np.abs(z - zt) <= s)) if sel.any()
                  else float("nan")}
    return out


def fuse_version(version_dir: Path, config: str | Path, n_calib: int,
                 data_dir: Path | None) -> dict[str, Any]:
    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if "redshift" in manifest:
        raise SystemExit(f"{version_dir} already has an in-graph redshift fit")
    model_path = version_dir / manifest["file"]
    classifier = onnx.load(str(model_path))
    data = calibration_set(config, n_calib, data_dir)
    search = RedshiftGraphConfig(mask_bands=TELLURIC_BANDS, qso_n_poly=3)
    first = fuse_with_classifier(classifier, search)
    tmp = version_dir / "model.uncalibrated.onnx"
    onnx.save(first, str(tmp))
    try:
        calib = scales(run_onnx(tmp, data["x"]), data)
    finally:
        tmp.unlink()
    cfg = dataclasses.replace(search,
                              z_sigma_scale={c: calib[c]["scale"] for c in FIT_CLASSES})
    fused = fuse_with_classifier(classifier, cfg)
    onnx.save(fused, str(model_path))
    declared = {o["name"] for o in manifest["outputs"]}
    for out in fused.graph.output:
        if out.name not in declared:
            manifest["outputs"].append({"name": out.name,
                                        "dtype": OUTPUT_DTYPES.get(out.name, "float32"),
                                        "shape": [-1]})
    manifest["sha256"] = sha256_file(model_path)
    manifest["redshift"] = {
        "method": "in-graph χ² fit of the SDSS galaxy (4 eigenspectra + 3 Legendre) and quasar "
                  "(4 eigenspectra + 3 Legendre) templates over every shift, O₂ A/B bands masked; z of the top class; STAR: z = 0 "
                  "prior (training/redshift_graph.py)",
        "config": dataclasses.asdict(cfg),
        "calibration": {"data": f"{n_calib} simulated validation spectra of {config}",
                        **calib},
        "network_z_outputs": ["z_network", "z_sigma_network"],
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest["redshift"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("version_dir", type=Path)
    ap.add_argument("--config", required=True, help="the training config (its val split)")
    ap.add_argument("--n-calib", type=int, default=2000)
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    a = ap.parse_args(argv)
    print(json.dumps(fuse_version(a.version_dir, a.config, a.n_calib, a.data_dir), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
