"""A synthetic dataset in the real file layout, so the trainer/exporter run without 21cmFAST.

Each cube's mean brightness follows two of the parameters (so there is something to learn),
on the dataset grid of the config; everything else (status codes, rejections) is as the
builder writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.lightcone import dataset
from training.lightcone.config import LightconeConfig, load_config
from training.lightcone.simulate import STATUS, SimResult, draw

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "lightcone" / "configs" / "lightcone_tiny.json"


def tiny_config(n_sims: int = 48) -> LightconeConfig:
    cfg = load_config(TINY)
    cfg.data.n_sims = n_sims
    return cfg


def write_fake_dataset(cfg: LightconeConfig, data_dir: Path) -> Path:
    path = dataset.dataset_path(cfg, data_dir)
    grid = cfg.grid.dataset_grid()
    rng = np.random.default_rng(0)
    f = dataset._open(path, cfg, cfg.data.n_sims)
    try:
        for i in range(cfg.data.n_sims):
            params, seed = draw(cfg, i)
            u = dataset.split_of(np.array([i]), cfg)[0]
            status = STATUS["rejected_tau"] if (i % 7 == 3 and u == "train") else STATUS["accepted"]
            cube = None
            if status == STATUS["accepted"]:
                level = 20 * (params[3] - 4.6) + 0.1 * (params[4] - 130)
                cube = (level + rng.normal(0, 5, (grid.n_xy, grid.n_xy, grid.n_los))
                        ).astype(np.float16)
            dataset._write(f, SimResult(i, status, params, seed, 0.06, 0.0, 1.0, cube))
    finally:
        f.close()
    return path
