"""Give a classifier version the in-graph template-fit redshift: fuse, calibrate σ_z, write.

    python -m training.spectra.fuse_redshift models/spectrum_classifier/3 \
        --config training/configs/spectra_v3.json --n-calib 2000
    # a new version: the same network as v3, with the current search configuration
    python -m training.spectra.fuse_redshift models/spectrum_classifier/3 --new-version 4 \
        --config training/configs/spectra_v3.json --n-calib 4000

Why a step of its own: the χ² fit (training/spectra/redshift_graph.py) has no trained weights, so it
is added to an exported classifier graph rather than trained with it; only its σ_z needs data.
The curvature σ assumes exact templates, which the real sky (and our simulator) do not have,
so σ is inflated by √(χ²/dof) and then scaled per class until 68 % of simulated validation
spectra of that class fall within 1σ (``fit_sigma_scale``). The calibration spectra are the
training config's validation split, never the test split the report is computed on.

The version directory is rewritten in place: ``model.onnx`` becomes the fused graph,
``manifest.json`` gains the outputs ``z_warning`` (int32), ``z_rchi2``, ``z_galaxy``,
``z_qso``, ``z_chi2_galaxy``, ``z_chi2_qso``, ``z_network``, ``z_sigma_network`` and a
``redshift`` block (method, search configuration, calibration), and its sha256 is updated.
A version that already has a ``redshift`` block is refused (fusing twice would nest graphs);
``--new-version N`` instead takes the network out of such a version and fuses it afresh into a
sibling version N, leaving the source untouched (a served version never changes under its
number).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.utils import Extractor

from ..common.manifest import sha256_file
from .config import load_config
from .export_onnx import run_onnx
from .labels import TOP_CLASSES, TOP_OF_LABEL
from .redshift_graph import NET_RENAMES, RedshiftGraphConfig, fit_sigma_scale, fuse_with_classifier
from .simulate import generate

FIT_CLASSES = ("GALAXY", "QSO")
TELLURIC_BANDS = ((6860.0, 6900.0), (7590.0, 7710.0))  # O₂ B and A (vacuum Å), with margins
# the served search (v5): O₂ bands out, 5 Legendre terms for quasars (reddened and weak-line
# continua; models/spectrum_classifier/5/report.md), robust (spike-free) weights
SERVED_SEARCH = RedshiftGraphConfig(mask_bands=TELLURIC_BANDS, qso_n_poly=5, spike_sigma=5.0)
NETWORK_OUTPUTS = ("probs", "entropy", "epistemic", "z", "z_sigma")
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
    search = SERVED_SEARCH
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
                  "(4 eigenspectra + 3 Legendre) templates over every shift, O₂ A/B bands masked"
                  + (f", pixels > {cfg.spike_sigma:g}σ from the 5-pixel running median left out"
                     if cfg.spike_sigma > 0 else "")
                  + "; z of the top class; STAR: z = 0 prior (training/spectra/redshift_graph.py)",
        "config": dataclasses.asdict(cfg),
        "calibration": {"data": f"{n_calib} simulated validation spectra of {config}",
                        **calib},
        "network_z_outputs": ["z_network", "z_sigma_network"],
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest["redshift"]


def network_of(fused: onnx.ModelProto) -> onnx.ModelProto:
    """The classifier inside a fused graph, with its own output names back (z, z_sigma)."""
    back = {v: k for k, v in NET_RENAMES.items()}
    names = [NET_RENAMES.get(n, n) for n in NETWORK_OUTPUTS]
    net = Extractor(fused).extract_model([fused.graph.input[0].name], names)
    for node in net.graph.node:
        node.output[:] = [back.get(n, n) for n in node.output]
        node.input[:] = [back.get(n, n) for n in node.input]
    for out in net.graph.output:
        out.name = back.get(out.name, out.name)
    del net.opset_import[:]
    net.opset_import.extend(fused.opset_import)
    net.ir_version = fused.ir_version
    return net


def derive_version(source: Path, new_version: int, config: str | Path, n_calib: int,
                   data_dir: Path | None) -> dict[str, Any]:
    """Version ``new_version`` beside ``source``: the source's network and other graphs,
    fused afresh with SERVED_SEARCH and calibrated."""
    target = source.parent / str(new_version)
    if target.exists():
        raise SystemExit(f"{target} exists; a version is written once")
    shutil.copytree(source, target)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    model_path = target / manifest["file"]
    onnx.save(network_of(onnx.load(str(model_path))), str(model_path))
    added = {o["name"] for o in manifest["outputs"]} - set(NETWORK_OUTPUTS)
    manifest["outputs"] = [o for o in manifest["outputs"] if o["name"] not in added]
    manifest.pop("redshift")
    manifest["version"] = new_version
    manifest["derived_from"] = {"version": manifest_path.parent.parent.name + "/" + source.name,
                                "what": "the same network; the redshift fit fused afresh"}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return fuse_version(target, config, n_calib, data_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("version_dir", type=Path)
    ap.add_argument("--config", required=True, help="the training config (its val split)")
    ap.add_argument("--n-calib", type=int, default=2000)
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--new-version", type=int, default=None,
                    help="write a new sibling version from an already fused one (its network, "
                         "the current search); the source version is left as it is")
    a = ap.parse_args(argv)
    if a.new_version is not None:
        info = derive_version(a.version_dir, a.new_version, a.config, a.n_calib, a.data_dir)
    else:
        info = fuse_version(a.version_dir, a.config, a.n_calib, a.data_dir)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
