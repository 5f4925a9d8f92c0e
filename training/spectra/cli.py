"""``specula train spectra --config training/configs/spectra.json [--out models]``.

One run does everything the shipped model needs, in order: simulate (cached under data/) →
train the ensemble → fit temperature + redshift-σ scale on the validation split → checkpoint
(runs/) → export ONE ONNX graph + manifest into ``<out>/<name>/<version>/`` → evaluate
(report.md/report.json beside it, headline metrics into the manifest).

``--resume RUN_DIR`` continues a run whose session ended (``train.time_budget_s`` or
``train.session_epochs``) from the member checkpoints in ``RUN_DIR/members/``, with the
config stored in ``RUN_DIR/config.json``; a bare ``--resume`` takes the newest run of --config.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..common.runlog import Logger
from ..common.runs import add_resume_options, new_run_dir, resume_dir
from .config import Config, config_to_dict, load_config

REPO = Path(__file__).resolve().parents[2]


def train_spectra(cfg: Config, out_root: Path, runs_root: Path, data_dir: Path | None,
                  progress: bool = True, run_dir: Path | None = None) -> dict | None:
    """Simulate → train → calibrate → export → evaluate; ``run_dir`` continues a paused run.

    Returns the manifest, or None when the session ended (time budget) before training did.
    """
    # torch comes in only when a run starts: `specula train --help` works without the extra
    from .calibrate import fit_temperature, fit_z_sigma_scale
    from .evaluate import evaluate, headline
    from .export_onnx import export, write_manifest
    from .model import Ensemble
    from .simulate import describe, generate
    from .train import Paused, predict_members, save_checkpoint, train_ensemble

    resumed = run_dir is not None
    run_dir = run_dir or new_run_dir(cfg, runs_root, config_to_dict(cfg))
    log = Logger(run_dir / "train.log")
    log(f"{'resuming' if resumed else 'run dir'} {run_dir}")
    t_start = time.time()

    kw = {"workers": cfg.data.workers, "cache_dir": data_dir, "progress": progress}
    train = generate(cfg.sim, cfg.data.n_train, cfg.seed, "train", **kw)
    val = generate(cfg.sim, cfg.data.n_val, cfg.seed, "val", **kw)
    test = generate(cfg.sim, cfg.data.n_test, cfg.seed, "test", **kw)
    t_sim = time.time() - t_start
    log(f"simulated train/val/test {len(train['label'])}/{len(val['label'])}/"
        f"{len(test['label'])} in {t_sim:.0f} s")

    t0 = time.time()
    try:
        members = train_ensemble(cfg, train, val, log, run_dir)
    except Paused as exc:
        log(f"session ended before training did ({exc}); checkpoints are in {run_dir / 'members'}. "
            f"Continue with: specula train spectra --resume {run_dir}")
        return None
    t_train = time.time() - t0

    logits, mu, lv = predict_members(members, val["x"])
    temperature = fit_temperature(logits, val["label"].astype(int))
    z_scale = fit_z_sigma_scale(mu, lv, val["z"])
    log(f"calibration: temperature {temperature:.3f}, z_sigma scale {z_scale:.3f}")
    ckpt = run_dir / "checkpoint.pt"
    save_checkpoint(ckpt, cfg, members, {"temperature": temperature, "z_sigma_scale": z_scale})

    model_dir = out_root / cfg.name / str(cfg.version)
    ens = Ensemble(members, temperature, z_scale).eval()
    extra = {"simulate_s": round(t_sim), "train_s": round(t_train), "checkpoint": str(ckpt),
             "n_train": len(train["label"]), "n_val": len(val["label"]),
             "n_test": len(test["label"]),
             "steps_per_member": [int(getattr(m, "steps_done", 0)) for m in members],
             "history_per_member": [getattr(m, "history", []) for m in members]}
    manifest = export(ens, model_dir, config_to_dict(cfg), parity_x=val["x"][:256].astype(np.float32),
                      data_description=describe(cfg.sim), training_extra=extra)
    log(f"exported {model_dir / 'model.onnx'} sha256 {manifest['sha256'][:12]}… parity "
        f"max|ORT−torch| = {manifest['parity']['max_abs_diff']:.2e}")

    report = evaluate(cfg, members, temperature, z_scale, model_dir, log, test=test)
    manifest["metrics"] = headline(report)
    manifest["training"]["wall_time_s"] = round(time.time() - t_start)
    write_manifest(model_dir, manifest)
    log(f"done in {time.time() - t_start:.0f} s: {model_dir}")
    return manifest


def add_spectra_options(ap: argparse.ArgumentParser) -> None:
    add_resume_options(ap)
    ap.add_argument("--time-budget", type=float, metavar="S",
                    help="this session's wall-clock limit (overrides train.time_budget_s)")
    ap.add_argument("--out", default=str(REPO / "models"), help="model repository root")
    ap.add_argument("--runs", default=str(REPO / "runs"), help="checkpoints and logs")
    ap.add_argument("--data-dir", default=str(REPO / "data"), help="simulated-dataset cache")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="specula train spectra",
                                 description=__doc__.split("\n\n")[1])
    add_spectra_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    run_dir = resume_dir(a, "specula train spectra", load_config)
    cfg = load_config(run_dir / "config.json" if run_dir else a.config)
    if a.time_budget is not None:
        cfg.train.time_budget_s = a.time_budget
    train_spectra(cfg, Path(a.out), Path(a.runs), Path(a.data_dir), progress=not a.no_progress,
                  run_dir=run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
