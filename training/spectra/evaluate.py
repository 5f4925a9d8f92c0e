"""Evaluation report (report.md + report.json beside the model), written by the training run.

On held-out simulated spectra: accuracy, per-class precision/recall/F1, confusion matrices (top
class and label), ECE (15 bins) before/after temperature scaling, redshift σ_NMAD of
Δz/(1+z), outlier fractions and the fraction inside the predicted 1σ — overall, per survey and
in S/N bins; a robustness table (each simulator effect switched off); the chi-square
template-fitting baseline on the same spectra; ONNX throughput; and the prediction on the real
SDSS spectrum in ../shared (a STAR A0).

Run standalone: ``python -m training.spectra.evaluate --checkpoint runs/.../checkpoint.pt
--model-dir models/spectrum_classifier/1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from service.io.errors import InputError
from service.spectra import DEFAULT_GRID, Source, make_spectrum, preprocess, read_spectra

from .baseline import compare_baseline
from .calibrate import ece, ensemble_probs, ensemble_redshift, softmax
from .config import Config
from .export_onnx import run_onnx, write_manifest
from .labels import LABEL_NAMES, TOP_CLASSES, TOP_OF_LABEL
from .measures import onnx_throughput, sigma_nmad, top_probs
from .simulate import SHARED, SURVEY_NAMES, generate
from .train import load_checkpoint, predict_members

SNR_BINS = [(1, 3), (3, 5), (5, 10), (10, 20), (20, 1e9)]
Z_OUTLIER = {"GALAXY": 0.01, "QSO": 0.05, "STAR": 0.01}
REAL_SDSS = SHARED / "sdss" / "spec-1198-52669-0063.fits"


# ---------------------------------------------------------------------------- predictions
def predict(members, X: np.ndarray, temperature: float, z_scale: float) -> dict[str, np.ndarray]:
    logits, mu, lv = predict_members(members, X)
    z, sig_t, sig_z = ensemble_redshift(mu, lv)
    return {"logits": logits, "mu": mu, "lv": lv,
            "probs_raw": ensemble_probs(logits, 1.0),
            "probs": ensemble_probs(logits, temperature),
            "z": z, "z_sigma": sig_z * z_scale}


def prf(y: np.ndarray, p: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for k, n in enumerate(names):
        tp = int(((p == k) & (y == k)).sum())
        prec = tp / max(int((p == k).sum()), 1)
        rec = tp / max(int((y == k).sum()), 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-12)
        out[n] = {"precision": prec, "recall": rec, "f1": f1, "support": int((y == k).sum())}
    return out


def confusion(y: np.ndarray, p: np.ndarray, k: int) -> list[list[int]]:
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (y, p), 1)
    return m.tolist()


def redshift_metrics(z_true, z_pred, z_sig, tops) -> dict[str, dict[str, float]]:
    out = {}
    for t, name in enumerate(TOP_CLASSES):
        sel = tops == t
        if sel.sum() < 5:
            continue
        d = (z_pred[sel] - z_true[sel]) / (1 + z_true[sel])
        out[name] = {
            "n": int(sel.sum()),
            "sigma_nmad": sigma_nmad(d),
            "outlier_fraction": float(np.mean(np.abs(d) > Z_OUTLIER[name])),
            "outlier_threshold": Z_OUTLIER[name],
            "bias_median": float(np.median(d)),
            "within_1sigma": float(np.mean(np.abs(z_pred[sel] - z_true[sel]) <= z_sig[sel])),
            "median_z_sigma_over_1pz": float(np.median(z_sig[sel] / (1 + z_true[sel]))),
        }
    return out


def metrics(pred: dict, data: dict, full: bool = True) -> dict[str, Any]:
    y = data["label"].astype(int)
    probs = pred["probs"]
    p = probs.argmax(-1)
    ty, tp = TOP_OF_LABEL[y], TOP_OF_LABEL[p]
    tprobs = top_probs(probs)
    tp_top = tprobs.argmax(-1)  # top class by summed probability (the contract's rule)
    out: dict[str, Any] = {
        "n": len(y),
        "accuracy_label": float((p == y).mean()),
        "accuracy_top": float((tp_top == ty).mean()),
        "ece_label_before": ece(pred["probs_raw"], y),
        "ece_label_after": ece(probs, y),
        "ece_top_before": ece(top_probs(pred["probs_raw"]), ty),
        "ece_top_after": ece(tprobs, ty),
        "mean_confidence_wrong_top": float(tprobs.max(-1)[tp_top != ty].mean()) if (tp_top != ty).any() else None,
        "frac_wrong_top_with_p_gt_0.99": float(np.mean((tp_top != ty) & (tprobs.max(-1) > 0.99))),
        "redshift": redshift_metrics(data["z"], pred["z"], pred["z_sigma"], ty),
    }
    if full:
        out["per_top_class"] = prf(ty, tp_top, TOP_CLASSES)
        out["per_label"] = prf(y, p, LABEL_NAMES)
        out["confusion_top"] = confusion(ty, tp_top, len(TOP_CLASSES))
        out["confusion_label"] = confusion(y, p, len(LABEL_NAMES))
        star = ty == TOP_CLASSES.index("STAR")
        out["accuracy_star_subtype"] = float((p[star] == y[star]).mean()) if star.any() else None
        del tp
    return out


def subset(d: dict, sel: np.ndarray) -> dict:
    return {k: (v[sel] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(sel) else v)
            for k, v in d.items()}


def predsubset(pred: dict, sel: np.ndarray) -> dict:
    return {k: (v[:, sel] if k in ("logits", "mu", "lv") else v[sel]) for k, v in pred.items()}


# ------------------------------------------------------------------------------ real SDSS
def read_real_sdss(path: Path = REAL_SDSS):
    """The real SDSS spectrum through the service's reader if registered, else astropy."""
    try:
        fmt, specs = read_spectra(Source.from_path(path))
        return specs[0], f"service.spectra.read_spectra ({fmt} reader)"
    except InputError:  # no reader for it yet: read the COADD table directly
        pass
    with fits.open(path) as h:
        c = h[1].data
        lam = 10 ** np.asarray(c["loglam"], dtype=np.float64)
        flux = np.asarray(c["flux"], dtype=np.float64)
        ivar = np.asarray(c["ivar"], dtype=np.float64)
        mask = np.asarray(c["and_mask"]) != 0
        meta = {"survey": "sdss", "object_id": path.stem}
    return make_spectrum(lam, flux, ivar, mask, meta), "astropy fallback (no sdss reader yet)"


def real_sdss_prediction(members, temperature, z_scale, onnx_path: Path | None) -> dict[str, Any]:
    spec, how = read_real_sdss()
    x = preprocess(spec, DEFAULT_GRID).x[None]
    pred = predict(members, x, temperature, z_scale)
    probs = pred["probs"][0]
    with fits.open(REAL_SDSS) as h:
        so = h[2].data
        truth = {"class": str(so["CLASS"][0]).strip(), "subclass": str(so["SUBCLASS"][0]).strip(),
                 "z": float(so["Z"][0])}
    order = np.argsort(probs)[::-1][:4]
    tprob = top_probs(probs[None])[0]
    out = {"file": REAL_SDSS.name, "reader": how, "truth_sdss_pipeline": truth,
           "top_class": TOP_CLASSES[int(tprob.argmax())],
           "top_probs": {c: float(v) for c, v in zip(TOP_CLASSES, tprob)},
           "label": LABEL_NAMES[int(probs.argmax())],
           "top_labels": {LABEL_NAMES[i]: float(probs[i]) for i in order},
           "z": float(pred["z"][0]), "z_sigma": float(pred["z_sigma"][0]),
           "member_labels": [LABEL_NAMES[int(i)] for i in pred["logits"][:, 0].argmax(-1)]}
    if onnx_path is not None and onnx_path.exists():
        o = run_onnx(onnx_path, x)
        out["onnx"] = {"label": LABEL_NAMES[int(o["probs"][0].argmax())],
                       "entropy": float(o["entropy"][0]), "epistemic": float(o["epistemic"][0]),
                       "z": float(o["z"][0]), "z_sigma": float(o["z_sigma"][0])}
    return out


# ------------------------------------------------------------------------------ the report
def evaluate(cfg: Config, members, temperature: float, z_scale: float, model_dir: Path,
             log: Callable[[str], None] = print, test: dict | None = None) -> dict[str, Any]:
    seed, workers = cfg.seed, cfg.data.workers
    if test is None:
        test = generate(cfg.sim, cfg.data.n_test, seed, "test", workers=workers)
    log(f"evaluate: {len(test['label'])} test spectra")
    pred = predict(members, test["x"], temperature, z_scale)
    report: dict[str, Any] = {"temperature": temperature, "z_sigma_scale": z_scale,
                              "labels": LABEL_NAMES, "top_classes": TOP_CLASSES,
                              "overall": metrics(pred, test)}
    report["per_survey"] = {}
    for i, s in enumerate(SURVEY_NAMES):
        sel = test["survey"] == i
        if sel.sum() >= 20:
            report["per_survey"][s] = metrics(predsubset(pred, sel), subset(test, sel), full=False)
    report["per_snr"] = {}
    for lo, hi in SNR_BINS:
        sel = (test["snr"] >= lo) & (test["snr"] < hi)
        if sel.sum() >= 20:
            key = f"{lo}-{hi:g}" if hi < 1e8 else f">={lo}"
            report["per_snr"][key] = metrics(predsubset(pred, sel), subset(test, sel), full=False)
    for flag in ("bal", "weak_line"):
        sel = test[flag] == 1
        if sel.sum() >= 10:
            report[f"qso_{flag}"] = {"n": int(sel.sum()),
                                     "accuracy_top": float((top_probs(pred["probs"][sel]).argmax(-1)
                                                            == TOP_OF_LABEL[test["label"][sel]]).mean())}

    report["robustness"] = robustness(cfg, members, temperature, z_scale, log)
    report["baseline"] = None
    if cfg.eval.baseline_n > 0:
        try:
            report["baseline"] = compare_baseline(cfg, test, pred, model_dir / "model.onnx", log)
        except Exception as exc:  # the report must still be written; say what failed
            log(f"baseline failed: {type(exc).__name__}: {exc}")
            report["baseline"] = None
    onnx_path = model_dir / "model.onnx"
    if onnx_path.exists():
        report["onnx_throughput"] = onnx_throughput(onnx_path, test["x"], cfg.eval.bench_batch,
                                                    cfg.eval.bench_repeats)
        log(f"onnx throughput: {report['onnx_throughput']}")
    report["real_sdss"] = real_sdss_prediction(members, temperature, z_scale, onnx_path)
    log(f"real SDSS spectrum: {report['real_sdss']['label']} "
        f"(pipeline {report['real_sdss']['truth_sdss_pipeline']})")
    write_report(model_dir, report)
    return report


def robustness(cfg: Config, members, temperature, z_scale, log) -> dict[str, Any]:
    """The shipped model on test sets with all effects on vs. one effect switched off."""
    n = cfg.data.n_robust
    if n <= 0:
        return {}
    out = {}
    variants = [("all on", None)] + [(f.name, f.name) for f in dataclasses.fields(cfg.sim.effects)
                                      if f.name != "redshift"]
    for name, off in variants:
        sim = dataclasses.replace(cfg.sim, effects=dataclasses.replace(
            cfg.sim.effects, **({off: False} if off else {})))
        d = generate(sim, n, cfg.seed, "robust", workers=cfg.data.workers, progress=False)
        m = metrics(predict(members, d["x"], temperature, z_scale), d, full=False)
        out[name] = {"accuracy_label": m["accuracy_label"], "accuracy_top": m["accuracy_top"],
                     "ece_top_after": m["ece_top_after"],
                     "nmad_galaxy": m["redshift"].get("GALAXY", {}).get("sigma_nmad"),
                     "nmad_qso": m["redshift"].get("QSO", {}).get("sigma_nmad"),
                     "outlier_qso": m["redshift"].get("QSO", {}).get("outlier_fraction")}
        log(f"robustness {name}: {out[name]}")
    return out


def _f(v, nd=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def write_report(model_dir: Path, r: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "report.json").write_text(json.dumps(r, indent=1, default=float) + "\n")
    (model_dir / "report.md").write_text(render_markdown(r))


def _row_block(title: str, rows: dict[str, dict]) -> list[str]:
    L = [f"### {title}", "",
         "| subset | n | acc (label) | acc (top) | ECE top before → after | σ_NMAD gal | out gal | "
         "in 1σ gal | σ_NMAD QSO | out QSO | in 1σ QSO |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, m in rows.items():
        g, q = m["redshift"].get("GALAXY", {}), m["redshift"].get("QSO", {})
        L.append(f"| {k} | {m['n']} | {_f(m['accuracy_label'])} | {_f(m['accuracy_top'])} | "
                 f"{_f(m['ece_top_before'])} → {_f(m['ece_top_after'])} | "
                 f"{_f(g.get('sigma_nmad'), 4)} | {_f(g.get('outlier_fraction'))} | "
                 f"{_f(g.get('within_1sigma'), 2)} | {_f(q.get('sigma_nmad'), 4)} | "
                 f"{_f(q.get('outlier_fraction'))} | {_f(q.get('within_1sigma'), 2)} |")
    return L + [""]


def render_markdown(r: dict[str, Any]) -> str:
    o = r["overall"]
    L = ["# Spectrum classifier — evaluation report", "",
         "Held-out **simulated** spectra (same simulator, different seeds; see docs/training.md). "
         "Real-data performance is not established by these numbers; see the real SDSS spectrum "
         "at the end.", "",
         f"Temperature T = {r['temperature']:.3f}; redshift σ scale s = {r['z_sigma_scale']:.3f} "
         "(both fitted on the validation split, folded into the ONNX graph).", "",
         *([f"- {n}" for n in r.get("notes", [])] + ([""] if r.get("notes") else [])),
         *([f"Training: {r['training']['n_train']} simulated spectra, steps per member "
            f"{r['training']['steps_per_member']}, training {r['training']['train_s']} s, whole run "
            f"{r['training']['wall_time_s']} s (commit {r['training']['git_commit']}).", ""]
           if r.get("training") else []),
         "## Overall", "",
         f"- spectra: {o['n']}",
         f"- accuracy, 13 labels: **{o['accuracy_label']:.4f}**; top class (GALAXY/QSO/STAR): "
         f"**{o['accuracy_top']:.4f}**; star subtype (given true STAR): "
         f"{_f(o.get('accuracy_star_subtype'), 4)}",
         f"- ECE (15 bins), labels: {o['ece_label_before']:.4f} before → "
         f"{o['ece_label_after']:.4f} after temperature scaling; top class: "
         f"{o['ece_top_before']:.4f} → {o['ece_top_after']:.4f}",
         f"- wrong top class with P > 0.99: {o['frac_wrong_top_with_p_gt_0.99']:.4f} of all spectra; "
         f"mean confidence when wrong: {_f(o['mean_confidence_wrong_top'])}", "",
         "### Redshift (true class; Δ = (z_pred − z)/(1+z))", "",
         "| class | n | σ_NMAD | outlier threshold | outlier fraction | median bias | inside 1σ |",
         "|---|---|---|---|---|---|---|"]
    for c, m in o["redshift"].items():
        L.append(f"| {c} | {m['n']} | {m['sigma_nmad']:.5f} | {m['outlier_threshold']} | "
                 f"{m['outlier_fraction']:.4f} | {m['bias_median']:+.5f} | {m['within_1sigma']:.3f} |")
    L += ["", "### Per top class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, m in o["per_top_class"].items():
        L.append(f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |")
    L += ["", "### Per label", "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c, m in o["per_label"].items():
        L.append(f"| {c} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |")
    L += ["", "### Confusion matrix, top class (rows true, columns predicted)", "",
          "| true \\ pred | " + " | ".join(TOP_CLASSES) + " |", "|---" * (len(TOP_CLASSES) + 1) + "|"]
    for c, row in zip(TOP_CLASSES, o["confusion_top"]):
        L.append(f"| {c} | " + " | ".join(map(str, row)) + " |")
    short = [n.replace("STAR:", "") for n in LABEL_NAMES]
    L += ["", "### Confusion matrix, labels (rows true, columns predicted)", "",
          "| true \\ pred | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
    for c, row in zip(short, o["confusion_label"]):
        L.append(f"| {c} | " + " | ".join(map(str, row)) + " |")
    L += [""]
    L += _row_block("Per survey configuration", r["per_survey"])
    L += _row_block("Per S/N bin (median S/N per Δlog10λ = 1e-4 pixel)", r["per_snr"])
    for flag in ("qso_bal", "qso_weak_line"):
        if r.get(flag):
            L.append(f"- {flag.replace('_', ' ')}: n = {r[flag]['n']}, top-class accuracy "
                     f"{r[flag]['accuracy_top']:.3f}")
    if r.get("robustness"):
        L += ["", "### Robustness: one simulator effect switched off (same model)", "",
              "| variant | acc (label) | acc (top) | ECE top | σ_NMAD gal | σ_NMAD QSO | out QSO |",
              "|---|---|---|---|---|---|---|"]
        for k, m in r["robustness"].items():
            L.append(f"| {k if k == 'all on' else k + ' off'} | {_f(m['accuracy_label'])} | "
                     f"{_f(m['accuracy_top'])} | {_f(m['ece_top_after'])} | "
                     f"{_f(m['nmad_galaxy'], 4)} | {_f(m['nmad_qso'], 4)} | {_f(m['outlier_qso'])} |")
    b = r.get("baseline")
    if b:
        L += ["", "### Baseline: chi-square template fitting on the same spectra", "", b["description"], "",
              "| method | n | acc (top) | acc (label) | σ_NMAD gal | out gal | σ_NMAD QSO | out QSO | spectra/s |",
              "|---|---|---|---|---|---|---|---|---|"]
        for k in ("network", "chi2"):
            m = b[k]
            L.append(f"| {m['name']} | {b['n']} | {_f(m['accuracy_top'])} | {_f(m['accuracy_label'])} | "
                     f"{_f(m['nmad_galaxy'], 4)} | {_f(m['outlier_galaxy'])} | {_f(m['nmad_qso'], 4)} | "
                     f"{_f(m['outlier_qso'])} | {m['spectra_per_s']:.1f} |")
    p = r.get("parity")
    if p:
        L += ["", f"ONNX vs PyTorch on the same {p['n_spectra']} preprocessed spectra: max |Δ| = "
              f"{p['max_abs_diff']:.2e} over all outputs ("
              + ", ".join(f"{k} {v:.1e}" for k, v in p["per_output"].items()) + ")."]
    t = r.get("onnx_throughput")
    if t:
        L += ["", f"ONNX Runtime CPU throughput of the whole ensemble: "
              f"**{t['spectra_per_s_median']:.0f} spectra/s** (median of {t['repeats']}, batch "
              f"{t['batch']}, {t['threads']} threads; best {t['spectra_per_s_best']:.0f}/s)."]
    s = r.get("real_sdss")
    if s:
        L += ["", "## The real SDSS spectrum", "",
              f"`{s['file']}` (read via {s['reader']}); the SDSS pipeline says "
              f"{s['truth_sdss_pipeline']}.", "",
              f"- network: **{s['label']}**, top class {s['top_class']} "
              f"(P = {s['top_probs'][s['top_class']]:.3f}); top labels {json.dumps({k: round(v, 3) for k, v in s['top_labels'].items()})}",
              f"- z = {s['z']:.5f} ± {s['z_sigma']:.5f}; members' labels: {s['member_labels']}"]
        if s.get("onnx"):
            L.append(f"- ONNX graph: {s['onnx']['label']}, entropy {s['onnx']['entropy']:.3f} nats, "
                     f"epistemic {s['onnx']['epistemic']:.3f} nats")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.spectra.evaluate")
    ap.add_argument("--checkpoint", help="re-run the evaluation of this checkpoint")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--render-only", action="store_true",
                    help="only re-render report.md from report.json (+ manifest, notes)")
    ap.add_argument("--note", action="append", default=[], help="a note for the report")
    a = ap.parse_args(argv)
    if a.render_only:
        md = Path(a.model_dir)
        rep = json.loads((md / "report.json").read_text())
        rep["notes"] = a.note or rep.get("notes", [])
        man_path = md / "manifest.json"
        if man_path.exists():
            man = json.loads(man_path.read_text())
            rep["parity"] = man.get("parity")
            rep["training"] = {k: man["training"].get(k) for k in
                               ("train_s", "simulate_s", "wall_time_s", "steps_per_member",
                                "n_train", "git_commit", "created")}
        write_report(md, rep)
        return 0
    if not a.checkpoint:
        ap.error("--checkpoint is required unless --render-only")

    cfg, ens, ck = load_checkpoint(Path(a.checkpoint))
    md = Path(a.model_dir)
    rep = evaluate(cfg, list(ens.members), float(ens.temperature), float(ens.z_sigma_scale), md)
    man_path = md / "manifest.json"
    if man_path.exists():
        man = json.loads(man_path.read_text())
        man["metrics"] = headline(rep)
        write_manifest(md, man)
    return 0


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the manifest carries (the full report is beside it)."""
    o = r["overall"]
    out = {"test_set": "simulated, held out", "n": o["n"],
           "accuracy_label": o["accuracy_label"], "accuracy_top": o["accuracy_top"],
           "ece_top_after": o["ece_top_after"], "ece_label_after": o["ece_label_after"],
           "redshift": {c: {k: m[k] for k in ("sigma_nmad", "outlier_fraction", "within_1sigma")}
                        for c, m in o["redshift"].items()},
           "real_sdss_A0": r.get("real_sdss", {}).get("label")}
    if r.get("onnx_throughput"):
        out["onnx_spectra_per_s"] = r["onnx_throughput"]["spectra_per_s_median"]
    return out


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["evaluate", "metrics", "predict", "softmax"]
