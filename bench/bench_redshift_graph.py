"""The χ² redshift graph fused into the classifier: its speed cost, and its redshifts.

    .venv/bin/python -m bench.bench_redshift_graph [--n 500] [--rounds 7] [--json out.json]
                                                   [--write-fused /tmp/fused.onnx]

Speed: spectra/s of (a) the v2 network alone and (b) the fused graph (network + GALAXY/QSO
χ²(z) from training/spectra/redshift_graph.py), ONNX Runtime on CPU, 2 intra-op threads, spin-wait
off, batch 256, rounds alternated in one process so that a busy machine slows both alike
(medians; the load average is printed). Goal: (b) ≥ 1,500/s.
Redshifts: σ_NMAD and outlier fractions (|Δz|/(1+z) > 0.01 galaxies, 0.05 quasars) on
``--n`` simulated galaxies and quasars (half each, the training simulator's defaults
otherwise) for: the fused graph's ``z`` (the network's top class picks the fit); the
graph's fit of the true class (the fit alone); baseline.py's TemplateFitter (least χ² over
GALAXY/QSO/STAR); and baseline.py's χ² of the true class. Also split at S/N 5.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]

from training.spectra.baseline import TemplateFitter, _parabola, chi2_fft
from training.spectra.config import SimConfig
from training.spectra.labels import LABEL_NAMES, TOP_CLASSES, TOP_OF_LABEL
from training.spectra.redshift_graph import RedshiftGraphConfig, fuse_with_classifier
from training.spectra.simulate import generate

CLASSIFIER = REPO / "models" / "spectrum_classifier" / "2" / "model.onnx"
BATCH, THREADS = 256, 2
OUTLIER = {"GALAXY": 0.01, "QSO": 0.05}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """The service's CPU setting: 2 intra-op threads, no spin-waiting (cores are shared)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def speeds(sessions: dict[str, ort.InferenceSession], x: np.ndarray,
           rounds: int) -> dict[str, dict[str, float]]:
    """Per session over alternated rounds on one batch: median spectra/s (wall clock), and
    CPU ms per spectrum (process CPU time: what a spectrum costs the machine, much less
    sensitive than wall time to other jobs sharing the cores)."""
    for s in sessions.values():
        s.run(None, {"spectrum": x})
    wall = {k: [] for k in sessions}
    cpu = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t, c = time.perf_counter(), time.process_time()
            s.run(None, {"spectrum": x})
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return {k: {"spectra_per_s": len(x) / statistics.median(wall[k]),
                "cpu_ms_per_spectrum": 1e3 * statistics.median(cpu[k]) / len(x)} for k in sessions}


def run_all(sess: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(None, {"spectrum": x[i:i + BATCH].astype(np.float32)})
             for i in range(0, len(x), BATCH)]
    return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}


def baseline_class_z(x: np.ndarray, fitter: TemplateFitter) -> dict[str, np.ndarray]:
    """baseline.py's χ² argmin + parabola for each class on every spectrum (float64)."""
    out = {"GALAXY": [], "QSO": []}
    for i in range(0, len(x), 50):
        xx = x[i:i + 50].astype(np.float64)
        wt = np.clip(xx[:, 1], 0.0, 0.999)
        f, w = xx[:, 0], wt / (1 - wt)
        for cls, rs in (("GALAXY", fitter.gal), ("QSO", fitter.qso)):
            chi, shifts = chi2_fft(f, w, rs, fitter.P)
            j = chi.argmin(1)
            out[cls].append(10 ** ((shifts[j] + _parabola(chi, j)) * fitter.grid.dloglam) - 1)
    return {k: np.concatenate(v) for k, v in out.items()}


def scores(z: np.ndarray, z_true: np.ndarray, cls: str) -> dict[str, float]:
    d = (z - z_true) / (1 + z_true)
    return {"n": len(d),
            "sigma_nmad": float(1.4826 * np.median(np.abs(d - np.median(d)))) if len(d) else None,
            "outliers": float(np.mean(np.abs(d) > OUTLIER[cls])) if len(d) else None}


def pulls(z: np.ndarray, sigma: np.ndarray, z_true: np.ndarray, cls: str) -> list[float]:
    """Median σ_z and the NMAD of (z − z_true)/σ_z over the non-outliers (1 if σ_z is honest)."""
    ok = np.abs(z - z_true) / (1 + z_true) < OUTLIER[cls]
    pull = (z - z_true)[ok] / sigma[ok]
    return [float(np.median(sigma)), float(1.4826 * np.median(np.abs(pull)))]


def accuracy(data: dict, fused: dict, base_fit: dict, base_cls: dict) -> dict:
    """Per true class and S/N range: the four redshift estimates against the truth."""
    out = {}
    zt = data["z"].astype(np.float64)
    for cls in ("GALAXY", "QSO"):
        is_cls = data["label"] == LABEL_NAMES.index(cls)
        for rng, sel in (("all", is_cls), ("snr>=5", is_cls & (data["snr"] >= 5)),
                         ("snr<5", is_cls & (data["snr"] < 5))):
            out[f"{cls} {rng}"] = {
                "fused z (network's top class)": scores(fused["z"][sel], zt[sel], cls),
                "graph fit, true class": scores(fused[f"z_{cls.lower()}"][sel], zt[sel], cls),
                "baseline.py TemplateFitter": scores(base_fit["z"][sel], zt[sel], cls),
                "baseline.py chi2, true class": scores(base_cls[cls][sel], zt[sel], cls),
            }
            if rng == "all":
                w = fused["z_warning"][sel]
                out[f"{cls} {rng}"]["z_warning bits 1/2/4 set"] = [
                    int(np.sum(w & b > 0)) for b in (1, 2, 4)]
                out[f"{cls} {rng}"]["fused z_sigma: median, pull NMAD"] = pulls(
                    fused["z"][sel], fused["z_sigma"][sel], zt[sel], cls)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--classifier", type=Path, default=CLASSIFIER)
    ap.add_argument("--write-fused", type=Path, help="also save the fused candidate graph here")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)

    cfg = RedshiftGraphConfig()
    net_model = onnx.load(str(a.classifier))
    fused_model = fuse_with_classifier(net_model, cfg)
    if a.write_fused:
        onnx.save(fused_model, str(a.write_fused))
    sessions = {"network": session(net_model), "fused": session(fused_model)}
    data = generate(SimConfig(class_fractions={"GALAXY": 0.5, "QSO": 0.5}), a.n, a.seed, "test",
                    progress=False)
    x = data["x"].astype(np.float32)
    xb = np.resize(x, (BATCH,) + x.shape[1:])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; onnxruntime {ort.__version__}")
    sp = speeds(sessions, xb, a.rounds)
    net, fus = sp["network"], sp["fused"]
    print(f"speed (batch {BATCH}, {THREADS} threads, spinning off, median of {a.rounds} alternated "
          f"rounds): network {net['spectra_per_s']:,.0f}/s, fused {fus['spectra_per_s']:,.0f}/s "
          f"(ratio {fus['spectra_per_s'] / net['spectra_per_s']:.2f}); CPU per spectrum: network "
          f"{net['cpu_ms_per_spectrum']:.3f} ms, fused {fus['cpu_ms_per_spectrum']:.3f} ms "
          f"(ratio {net['cpu_ms_per_spectrum'] / fus['cpu_ms_per_spectrum']:.2f})")

    fused = run_all(sessions["fused"], x)
    fitter = TemplateFitter()
    t0 = time.perf_counter()
    base_fit = fitter.fit(x)
    base_s = time.perf_counter() - t0
    base_cls = baseline_class_z(x, fitter)
    acc = accuracy(data, fused, base_fit, base_cls)
    top = (fused["probs"] @ np.eye(len(TOP_CLASSES))[TOP_OF_LABEL]).argmax(1)
    acc["network top-class accuracy"] = float(np.mean(top == TOP_OF_LABEL[data["label"]]))
    print(f"redshifts on {a.n} simulated spectra (baseline TemplateFitter {a.n / base_s:.0f}/s; "
          f"network top class right for {acc['network top-class accuracy']:.3f}):")
    for group, rows in acc.items():
        if not isinstance(rows, dict):
            continue
        print(f"  {group}")
        for name, r in rows.items():
            if isinstance(r, dict):
                print(f"    {name:32s} n={r['n']:4d}  sigma_nmad={r['sigma_nmad']:.2e}  "
                      f"outliers={r['outliers']:.3f}")
            else:
                print(f"    {name:32s} {r}")
    if a.json:
        a.json.write_text(json.dumps({"speed": sp, "config": cfg.__dict__, "accuracy": acc,
                                      "load_average": os.getloadavg()[0]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
