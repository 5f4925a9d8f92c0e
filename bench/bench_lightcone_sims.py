"""What one 21cmFAST lightcone costs per box size: the measurement issue 20 asks for before
choosing the v4 dataset's box (≥ 128 Mpc, HII_DIM ≥ 32).

    .venv/bin/python -m bench.bench_lightcone_sims [--sizes 16:64 24:96 32:128] [--runs 3]

For each HII_DIM:BOX_LEN (Mpc; 4 Mpc cells throughout), the v3 config's simulator settings
(const-zeta, spin temperature on, z 5.5–19, 2× finer initial conditions) run ``--runs``
lightcones drawn from the priors (the dataset's own runs 0, 1, …), one at a time in this
process per size (1 thread; a fresh process for each size, because 21cmFAST keeps global
state: a second size in the same process was seen to stall), and prints CPU seconds per run by outcome (accepted / τ-rejected runs stop
early) and the CPU hours 3,000 accepted lightcones would take at the measured acceptance.
Needs the `sim21` extra (21cmFAST). The sky grid of the dataset follows the box
(n_xy = HII_DIM); nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import time

from training.lightcone.config import load_config
from training.lightcone.simulate import STATUS, simulate

from .common import REPO_ROOT

CONFIG = REPO_ROOT / "training" / "lightcone" / "configs" / "lightcone_v3.json"


def run_size(dim: int, box: int, runs: int) -> list[tuple[str, float]]:
    """(outcome, CPU s) of the dataset's first ``runs`` runs at HII_DIM ``dim`` in ``box`` Mpc."""
    names = {v: k for k, v in STATUS.items()}
    cfg = load_config(CONFIG)
    cfg.sim = dataclasses.replace(cfg.sim, hii_dim=dim, box_len=float(box))
    cfg.grid = dataclasses.replace(cfg.grid, n_xy=dim)
    out = []
    for i in range(runs):
        t0 = time.process_time()
        r = simulate(cfg, i)
        out.append((names[r.status], time.process_time() - t0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["16:64", "24:96", "32:128"])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; 1 thread per run")
    print("| HII_DIM | box (Mpc) | runs | outcomes | CPU s per run (median) | "
          "CPU s per accepted run | CPU h per 3,000 accepted |")
    print("|---|---|---|---|---|---|---|")
    ctx = multiprocessing.get_context("spawn")
    for size in args.sizes:
        dim, box = (int(v) for v in size.split(":"))
        with ctx.Pool(1) as pool:
            results = pool.apply(run_size, (dim, box, args.runs))
        secs = [s for _, s in results]
        acc = [s for o, s in results if o == "accepted"]
        per_acc = sum(secs) / len(acc) if acc else float("nan")
        print(f"| {dim} | {box} | {len(results)} | "
              f"{', '.join(o for o, _ in results)} | {statistics.median(secs):.1f} | "
              f"{per_acc:.1f} | {3000 * per_acc / 3600:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
