"""The lightcone dataset: a resumable, parallel builder and a loader, one versioned HDF5 file.

Layout (``DATASET_VERSION`` 1), one row per *attempted* run ``i`` (so rejections are counted
where they happened and a resumed build knows exactly what is left):
  cubes       (n, n_xy, n_xy, n_los_dataset) float16, mK on the dataset grid (zeros unless
              accepted), chunked one cube per chunk
  params      (n, 5) float64, physical units, order = ``attrs['param_names']``
  seed, status (0 pending, 1 accepted, 2 rejected τ, 3 rejected x_HI, 4 failed, 5 screened:
              τ predicted far above the cut, not simulated — see TauScreen), tau (predicted
              for status 5; a lower bound for early-stopped τ rejections),
  xhi_lowz, cpu_seconds
  attrs: config (JSON), grid (JSON), provenance (JSON: simulator version, git commit, created)
The file name carries a hash of everything that changes the data (seed, sim, grid), so a config
change can never silently extend an incompatible file. Rows are written by the parent process
only (workers return results), flushed after each, so an interrupted build loses at most the
runs in flight and resumes with the same per-index parameters and seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from .config import LightconeConfig, config_from_dict, config_to_dict, load_config
from .simulate import STATUS, SimResult, draw, simulate, simulator_provenance

DATASET_VERSION = 1
REPO = Path(__file__).resolve().parents[2]


def data_hash(cfg: LightconeConfig) -> str:
    d = config_to_dict(cfg)
    # the preprocessing a model uses does not change the simulated data
    grid = {k: v for k, v in d["grid"].items() if k != "preprocess_version"}
    key = json.dumps({"seed": d["seed"], "sim": d["sim"], "grid": grid}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def dataset_path(cfg: LightconeConfig, data_dir: Path) -> Path:
    if cfg.data.file:
        return Path(cfg.data.file)
    return data_dir / f"lightcones-v{DATASET_VERSION}-{data_hash(cfg)}.h5"


SPLITS = ("train", "val", "test")


def split_of(index: np.ndarray, cfg: LightconeConfig) -> np.ndarray:
    """'train' / 'val' / 'test' per run index: a golden-ratio sequence, deterministic and
    evenly mixed whatever number of runs is finished."""
    u = (np.asarray(index, dtype=np.float64) * 0.6180339887498949) % 1.0
    out = np.full(u.shape, "train", dtype=object)
    out[u < cfg.data.test_fraction + cfg.data.val_fraction] = "val"
    out[u < cfg.data.test_fraction] = "test"
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _open(path: Path, cfg: LightconeConfig, n: int):
    grid = cfg.grid.dataset_grid()
    shape = (grid.n_xy, grid.n_xy, grid.n_los)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = h5py.File(path, "a")
    if "status" not in f:
        f.attrs["dataset_version"] = DATASET_VERSION
        f.attrs["config"] = json.dumps(config_to_dict(cfg))
        f.attrs["grid"] = json.dumps(grid.to_manifest())
        f.attrs["param_names"] = json.dumps(cfg.param_names)
        f.attrs["provenance"] = json.dumps({**simulator_provenance(), "git_commit": _git_commit(),
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime())})
        f.create_dataset("cubes", shape=(0, *shape), maxshape=(None, *shape), dtype="f2",
                         chunks=(1, *shape))
        f.create_dataset("params", shape=(0, len(cfg.param_names)),
                         maxshape=(None, len(cfg.param_names)), dtype="f8")
        for name, dt in (("seed", "i8"), ("status", "i1"), ("tau", "f4"), ("xhi_lowz", "f4"),
                         ("cpu_seconds", "f4")):
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt)
    elif int(f.attrs["dataset_version"]) != DATASET_VERSION:
        raise RuntimeError(f"{path}: dataset version {f.attrs['dataset_version']}")
    if f["status"].shape[0] < n:  # grow (a bigger n_sims extends the same runs)
        for name in ("cubes", "params", "seed", "status", "tau", "xhi_lowz", "cpu_seconds"):
            f[name].resize(n, axis=0)
    return f


class TauScreen:
    """Skip draws that will certainly fail the τ cut, without simulating them.

    Why: with 21cmPIE-Net's priors most of the (ζ, T_vir) volume reionises early (τ > 0.089);
    on this machine ~80% of full runs were thrown away. τ is a smooth function of the
    parameters, so a quadratic least-squares fit of τ on (log ζ, T_vir, Ω_m, L_X), refitted on
    every finished run, predicts it well; a draw is skipped (status ``screened_tau``) only when
    its prediction exceeds the cut by ``k`` residual standard deviations (and by at least
    0.005). Draws near the boundary are always simulated and cut on their true τ, so the
    accepted set is the prior × cuts up to the (rare) >kσ misprediction. Off until
    ``min_runs`` full runs exist."""

    def __init__(self, cfg: LightconeConfig, k: float = 3.0, min_runs: int = 40):
        self.cfg, self.k, self.min_runs = cfg, k, min_runs
        self.coef: np.ndarray | None = None
        self.resid = np.inf
        self.fitted_on = 0
        self.names = cfg.param_names

    def features(self, params: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(params)
        cols = {n: p[:, j] for j, n in enumerate(self.names)}
        base = [np.log(cols["HII_EFF_FACTOR"]), cols["ION_Tvir_MIN"], cols["OMm"], cols["L_X"]]
        quad = [a * b for j, a in enumerate(base) for b in base[j:]]
        return np.stack([np.ones(len(p)), *base, *quad], axis=1)

    def refit(self, f) -> None:
        st = f["status"][()]
        tau = f["tau"][()]
        # full runs only, and not those stopped early (their τ is a lower bound)
        ok = ((st == STATUS["accepted"]) | (st == STATUS["rejected_xhi"])
              | (st == STATUS["rejected_tau"])) & np.isfinite(tau)
        if ok.sum() < self.min_runs or ok.sum() == self.fitted_on:
            return
        X, y = self.features(f["params"][()][ok]), tau[ok].astype(np.float64)
        # τ of early-stopped rejections is a lower bound: fitting it only lowers predictions,
        # i.e. makes the screen more conservative
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        hat = np.einsum("ij,ji->i", X, np.linalg.pinv(X))  # leverages, for LOO residuals
        loo = (y - X @ coef) / np.clip(1.0 - hat, 1e-3, None)
        self.coef, self.resid, self.fitted_on = coef, float(np.std(loo)), int(ok.sum())

    def skip(self, index: int, f) -> bool:
        if self.fitted_on == 0 or index % 10 == 0:
            self.refit(f)
        if self.coef is None:
            return False
        params, _ = draw(self.cfg, index)
        pred = float((self.features(params) @ self.coef)[0])
        self._last = (params, pred)
        return pred > self.cfg.sim.tau_max + max(self.k * self.resid, 0.005)

    def record(self, index: int) -> SimResult:
        params, pred = self._last
        _, seed = draw(self.cfg, index)
        return SimResult(index, STATUS["screened_tau"], params, seed, pred, np.nan, 0.0, None,
                         "τ predicted above the cut")


_CFG: LightconeConfig | None = None


def _init_worker(cfg_dict: dict[str, Any]) -> None:
    global _CFG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's graceful handler
    _CFG = config_from_dict(cfg_dict)


def _work(index: int) -> SimResult:
    assert _CFG is not None
    return simulate(_CFG, index)


def _write(f, r: SimResult) -> None:
    i = r.index
    f["params"][i] = r.params
    f["seed"][i], f["tau"][i], f["xhi_lowz"][i] = r.seed, r.tau, r.xhi_lowz
    f["cpu_seconds"][i] = r.seconds
    if r.cube is not None:
        f["cubes"][i] = r.cube
    f["status"][i] = r.status  # last: a row counts as done only once its data are in
    f.flush()


def summary(status: np.ndarray) -> dict[str, int]:
    return {name: int((status == code).sum()) for name, code in STATUS.items()}


def build(cfg: LightconeConfig, data_dir: Path, *, workers: int | None = None,
          max_seconds: float = 0.0, progress: bool = True, log=print) -> Path:
    """Simulate every pending run of ``cfg.data.n_sims`` into the dataset file; resumable.

    ``max_seconds`` > 0 stops handing out new runs after that long (the ones in flight are
    finished and written), so a build can be fitted into a CPU budget and resumed later."""
    path = dataset_path(cfg, data_dir)
    n = cfg.data.n_sims
    f = _open(path, cfg, n)
    stop = {"flag": False}

    def on_term(signum, frame):  # SIGTERM: finish cleanly (the HDF5 file must be closed)
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        status = f["status"][:n]
        pending = [int(i) for i in np.flatnonzero(status == STATUS["pending"])]
        log(f"{path}: {n - len(pending)}/{n} runs done, {len(pending)} to go "
            f"({summary(status)})")
        if not pending:
            return path
        t0 = time.time()
        workers = workers or cfg.data.workers
        ctx = mp.get_context("fork")
        bar = None
        if progress:
            bar = tqdm(total=len(pending), desc="21cmFAST lightcones", unit="run",
                       smoothing=0.05)
        screen = TauScreen(cfg)
        with ctx.Pool(workers, initializer=_init_worker,
                      initargs=(config_to_dict(cfg),), maxtasksperchild=50) as pool:
            try:
                todo = iter(pending)
                in_flight: list = []
                while True:
                    while len(in_flight) < 2 * workers and not stop["flag"]:
                        i = next(todo, None)
                        if i is None:
                            break
                        if screen.skip(i, f):
                            _write(f, screen.record(i))
                            if bar is not None:
                                bar.update(1)
                            continue
                        in_flight.append(pool.apply_async(_work, (i,)))
                    if not in_flight:
                        break
                    done = next((a for a in in_flight if a.ready()), None)
                    if done is None:
                        time.sleep(0.2)
                        continue
                    in_flight.remove(done)
                    _write(f, done.get())
                    if bar is not None:
                        bar.update(1)
                        st = f["status"][:n]
                        bar.set_postfix(acc=int((st == 1).sum()), tau=int((st == 2).sum()),
                                        screened=int((st == 5).sum()), xhi=int((st == 3).sum()),
                                        fail=int((st == 4).sum()))
                    if stop["flag"] or (max_seconds and time.time() - t0 > max_seconds):
                        log("stopping: time budget or SIGTERM; in-flight runs are discarded "
                            "and will be redone on resume")
                        pool.terminate()
                        break
            except KeyboardInterrupt:
                log("interrupted; resumable")
                pool.terminate()
        if bar is not None:
            bar.close()
        log(f"{path}: {summary(f['status'][:n])} in {time.time() - t0:.0f} s")
    finally:
        signal.signal(signal.SIGTERM, old)
        f.close()
    return path


def load(path: Path, cfg: LightconeConfig, split: str,
         index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accepted runs of one split: cubes (float16, dataset grid), params, index.

    ``index``: exactly these runs (a training run pins the runs it started with, so that a
    resumed run sees the same data while the dataset keeps growing); each must be accepted
    and of this split."""
    with h5py.File(path, "r", locking=False) as f:
        status = f["status"][()]
        accepted = np.flatnonzero(status == STATUS["accepted"])
        if index is None:
            index = accepted[split_of(accepted, cfg) == split]
        else:
            index = np.asarray(index, dtype=np.int64)
            bad = index[~np.isin(index, accepted) | (split_of(index, cfg) != split)]
            if len(bad):
                raise ValueError(f"{path}: runs {bad[:5].tolist()} are not accepted {split} runs")
        cubes = np.stack([f["cubes"][i] for i in index]) if len(index) else np.zeros(
            (0, *f["cubes"].shape[1:]), dtype=np.float16)
        params = f["params"][()][index] if len(index) else np.zeros((0, f["params"].shape[1]))
    return {"cubes": cubes, "params": params, "index": index}


def describe(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r", locking=False) as f:
        status = f["status"][()]
        done = status != STATUS["pending"]
        return {"file": str(path), "dataset_version": int(f.attrs["dataset_version"]),
                "attempted": int(done.sum()), **summary(status),
                "cpu_seconds_total": float(f["cpu_seconds"][()][done].sum()),
                "cpu_seconds_median": float(np.median(f["cpu_seconds"][()][done]))
                if done.any() else 0.0,
                "provenance": json.loads(f.attrs["provenance"])}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.lightcone.dataset --config ... [--max-seconds S]``."""
    ap = argparse.ArgumentParser(description="build (or resume) the lightcone dataset")
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "lightcone.json"))
    ap.add_argument("--data-dir", default=str(REPO / "data"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--n-sims", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=0.0)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    if a.n_sims:
        cfg.data.n_sims = a.n_sims
    path = build(cfg, Path(a.data_dir), workers=a.workers, max_seconds=a.max_seconds,
                 progress=not a.no_progress)
    print(json.dumps(describe(path), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
