"""``specula train lightcone [--config training/lightcone/configs/lightcone.json]``.

One run does what the shipped model needs, in order: build/resume the 21cmFAST dataset
(``dataset.build``; skipped with ``--skip-build``, bounded by ``--max-build-seconds``) → train
on the accepted train split → σ calibration on validation → checkpoint (runs/) → ONNX +
manifest into ``<out>/<name>/<version>/`` → evaluation on the test split through ONNX Runtime
(report.md / report.json beside the model, headline numbers into the manifest).

Training is resumable: the state is checkpointed in ``RUN_DIR/train_state.pt`` at every epoch
end; ``train.session_seconds`` (or ``--session-seconds``) ends a session there, and
``specula train lightcone --resume RUN_DIR`` (a bare ``--resume``: the newest run of --config)
continues it with the run's own config.json and the dataset runs it pinned in data.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from service.lightcones.preprocess import normalise

from ..common.runlog import Logger
from ..common.runs import Paused, add_resume_options, new_run_dir, resume_dir
from .config import LightconeConfig, config_to_dict, load_config
from .noise import ThermalNoise, uv_maps

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "lightcone.json"


def train_lightcone(cfg: LightconeConfig, out_root: Path, runs_root: Path, data_dir: Path, *,
                    build_data: bool = True, max_build_seconds: float = 0.0,
                    progress: bool = True, run_dir: Path | None = None) -> dict | None:
    """Build → train → calibrate → export → evaluate; ``run_dir`` continues a paused run.

    Returns the manifest, or None when the session ended (``train.session_seconds``) before
    training did. A run pins the dataset runs it starts with (``RUN_DIR/data.json``): the
    dataset may grow between sessions, and a resumed run must train on the same cubes."""
    # torch comes in only when a run starts: `specula train lightcone --help` works without it
    from . import dataset
    from .evaluate import evaluate, headline
    from .export_onnx import export, write_manifest
    from .train import (
        grid_cubes,
        noisy_inputs,
        normalise_params,
        save_checkpoint,
        sigma_scale,
        train,
    )

    resumed = run_dir is not None
    run_dir = run_dir or new_run_dir(cfg, runs_root, config_to_dict(cfg))
    log = Logger(run_dir / "train.log")
    log(f"{'resuming' if resumed else 'run dir'} {run_dir}")
    t_start = time.time()

    pinned = run_dir / "data.json"
    if pinned.exists():
        runs = json.loads(pinned.read_text())
        path = Path(runs["file"])
    elif build_data:
        path = dataset.build(cfg, data_dir, max_seconds=max_build_seconds, progress=progress,
                             log=log)
    else:
        path = dataset.dataset_path(cfg, data_dir)
    info = dataset.describe(path)
    log(f"dataset {path}: {json.dumps({k: v for k, v in info.items() if k != 'provenance'})}")

    t0 = time.time()
    if pinned.exists():
        splits = {s: dataset.load(path, cfg, s, index=np.asarray(runs[s], dtype=np.int64))
                  for s in dataset.SPLITS}
    else:
        splits = {s: dataset.load(path, cfg, s) for s in dataset.SPLITS}
        pinned.write_text(json.dumps({"file": str(path.resolve()),
                                      **{s: splits[s]["index"].tolist() for s in dataset.SPLITS}}))
    grid = cfg.grid.model_grid()
    mks = {s: grid_cubes(d["cubes"], cfg) for s, d in splits.items()}  # model grid, mK
    xs = {s: normalise(mk, grid, cfg.grid.preprocess_version) for s, mk in mks.items()}
    ys = {s: normalise_params(d["params"], cfg) for s, d in splits.items()}
    log(f"preprocessed ({cfg.grid.preprocess_version}) train/val/test {len(xs['train'])}/"
        f"{len(xs['val'])}/{len(xs['test'])} cubes in {time.time() - t0:.1f} s")
    if len(xs["train"]) < 2:
        raise SystemExit("fewer than 2 accepted training lightcones: build the dataset first")

    noise = None
    if cfg.noise.train or cfg.noise.evaluate:
        try:
            noise = ThermalNoise(cfg, uv_maps(cfg, data_dir, log))
        except ImportError as exc:
            if cfg.noise.train:
                raise SystemExit(f"noise.train needs tools21cm: {exc}") from None
            log(f"noise not evaluated: {exc} (pip install tools21cm)")
    if cfg.noise.train:
        x_val, y_val = noisy_inputs(mks["val"], ys["val"], noise,
                                    np.random.default_rng(cfg.noise.seed + 1),
                                    cfg.noise.val_realisations, cfg)
        train_xy = (mks["train"][:, None], ys["train"])
    else:
        x_val, y_val = xs["val"], ys["val"]
        train_xy = (xs["train"], ys["train"])
    try:
        net, hist = train(cfg, train_xy, (x_val, y_val), log, noise=noise if cfg.noise.train
                          else None, state_path=run_dir / "train_state.pt")
    except Paused as exc:
        log(f"session ended before training did ({exc}); the state is in "
            f"{run_dir / 'train_state.pt'}. Continue with: specula train lightcone --resume "
            f"{run_dir}")
        return None
    scale = sigma_scale(net, x_val, y_val, cfg.train.min_sigma_scale)
    log(f"trained in {hist['seconds']:.0f} s (best epoch {hist['best_epoch']}); σ scale "
        f"{np.round(scale, 3).tolist()}")
    ckpt = run_dir / "checkpoint.pt"
    save_checkpoint(ckpt, cfg, net, scale, {"history": hist})

    extra = {"dataset": {k: v for k, v in info.items()}, "n_train": len(xs["train"]),
             "n_val": len(xs["val"]), "n_test": len(xs["test"]),
             "train_seconds": round(hist["seconds"], 1), "best_epoch": hist["best_epoch"],
             "epochs_run": len(hist["val_nll"]),
             "stopped_on_time": hist.get("stopped_on_time", 0),
             "steps": hist["steps"], "threads": cfg.train.threads, "checkpoint": str(ckpt)}
    model_dir = out_root / cfg.name / str(cfg.version)
    parity_x = np.concatenate([xs["test"], xs["val"], xs["train"]])[:8]
    manifest = export(net, cfg, scale, model_dir, parity_x=parity_x, training_extra=extra)
    log(f"exported {model_dir / 'model.onnx'} sha256 {manifest['sha256'][:12]}… parity "
        f"max|ORT−torch| = {manifest['parity']['max_abs_diff']:.2e} "
        f"({manifest['parity']['max_diff_over_prior_width']:.1e} of a prior width)")
    theta_test = splits["test"]["params"]
    rep_extra = {k: v for k, v in extra.items() if k != "checkpoint"}
    if cfg.noise.evaluate and noise is not None and len(theta_test):
        from .evaluate import evaluate_noisy, wedge_power_kept  # torch: see train_lightcone

        t0 = time.time()
        rep_extra["noise"] = evaluate_noisy(cfg, model_dir, mks["test"], theta_test, noise, log)
        sweep = {}
        for hours in cfg.noise.eval_obs_times_h:
            other = ThermalNoise(cfg, uv_maps(cfg, data_dir, log), obs_time_h=hours)
            sweep[f"{hours:g}"] = evaluate_noisy(cfg, model_dir, mks["test"], theta_test, other,
                                                 log)
        if sweep:
            rep_extra["obs_time_sweep"] = sweep
        rep_extra["wedge"] = wedge_power_kept(cfg, mks["test"])
        log(f"noisy evaluation in {time.time() - t0:.0f} s; wedge power kept "
            f"{rep_extra['wedge']['power_kept']}")
    if cfg.compare and len(theta_test):
        rep_extra["compare"] = compare(cfg, mks["test"], theta_test, noise, log)
    report = evaluate(cfg, model_dir, xs["test"], theta_test, rep_extra, log)
    manifest["metrics"] = headline(report)
    manifest["training"]["wall_time_s"] = round(time.time() - t_start)
    write_manifest(model_dir, manifest)
    log(f"done in {time.time() - t_start:.0f} s: {model_dir}")
    return manifest


def compare(cfg: LightconeConfig, cubes_mk, theta, noise, log) -> dict:
    """Other shipped models on this run's test cubes (and the same noise draws), each through
    its own manifest's preprocessing: e.g. v2 (noiseless-trained) next to v3."""
    from .evaluate import evaluate_noisy, metrics, model_contract  # torch: see train_lightcone
    from .export_onnx import run_onnx

    out = {}
    for rel in cfg.compare:
        d = REPO / rel
        m = json.loads((d / "manifest.json").read_text())
        grid, version = model_contract(d)
        if grid != cfg.grid.model_grid():
            log(f"compare: {rel} has another grid; skipped")
            continue
        o = run_onnx(d / "model.onnx", normalise(cubes_mk, grid, version))
        label = f"v{m['version']} ({version})"
        out[f"{label}, noiseless test cubes"] = {
            "per_parameter": metrics(theta, o["theta_mean"], o["theta_sigma"], cfg)}
        if noise is not None:
            out[f"{label}, noisy test cubes ({noise.obs_time_h:g} h)"] = evaluate_noisy(
                cfg, d, cubes_mk, theta, noise, log)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="specula train lightcone",
                                 description="simulate (resumable), train and export the 21cm "
                                             "lightcone regressor")
    add_resume_options(ap)
    ap.add_argument("--session-seconds", type=float, metavar="S",
                    help="this session's wall-clock limit for training (overrides "
                         "train.session_seconds); then --resume continues")
    ap.add_argument("--out", default=str(REPO / "models"), help="model repository root")
    ap.add_argument("--runs", default=str(REPO / "runs"), help="checkpoints and logs")
    ap.add_argument("--data-dir", default=str(REPO / "data"), help="dataset directory")
    ap.add_argument("--skip-build", action="store_true",
                    help="train on the dataset as it is (no new simulations)")
    ap.add_argument("--max-build-seconds", type=float, default=0.0,
                    help="stop simulating after this long (resumable); 0 = build all n_sims")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    run_dir = resume_dir(a, "specula train lightcone", load_config, DEFAULT_CONFIG)
    cfg = load_config(run_dir / "config.json" if run_dir else a.config or DEFAULT_CONFIG)
    if a.session_seconds is not None:
        cfg.train.session_seconds = a.session_seconds
    train_lightcone(cfg, Path(a.out), Path(a.runs), Path(a.data_dir),
                    build_data=not a.skip_build, max_build_seconds=a.max_build_seconds,
                    progress=not a.no_progress, run_dir=run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
