"""The training set's summary statistics, written into a shipped lightcone version's manifest
(``reference_statistics``), so the service can say how unlike the training cubes a cube is
(service.lightcones.statistics, ``training_distance`` in every answer).

Why a separate step: the statistics must be those of what the network saw — the same
simulations (the dataset is a pure function of the config's seed and the run index, so
building the first N runs of the version's config re-creates its training runs), through the
same preprocessing, with the same observation noise drawn the way training draws it (observing
times log-uniform in ``noise.train_obs_time_range_h``). Only the training split is used.

    python -m training.lightcone.reference --config training/lightcone/configs/lightcone_v3.json \
        --model-dir models/lightcone_regressor/3 --n-sims 400 [--noise-draws 4] [--max-seconds S]

``--n-sims`` grows the dataset (resumable: an interrupted build continues); about one run in
ten passes the τ and x_HI cuts, at ~5 CPU-s per run on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from service.lightcones.preprocess import normalise
from service.lightcones.statistics import Component, TrainingReference, summary_statistics

from . import dataset
from .config import load_config
from .noise import ThermalNoise, uv_maps
from .train import grid_cubes, noisy_inputs

REPO = Path(__file__).resolve().parents[2]


def components(cubes_mk: np.ndarray, cfg, noise: ThermalNoise | None, draws: int,
               seed: int, n_chunks: int) -> list[Component]:
    """The kinds of input the model was trained or validated on, each fitted on its own:
    - ``observed``: each cube with ``draws`` noise realisations, as training draws them
      (only for a model trained with noise);
    - ``noiseless``: the cubes as simulated. A noise-trained model never saw one, but its
      report validates that regime (the noiseless test table), and a simulation sent as it is
      should be judged by its physics, not flagged for lacking an instrument."""
    grid, version = cfg.grid.model_grid(), cfg.grid.preprocess_version
    out = [Component.fit("noiseless", summary_statistics(normalise(cubes_mk, grid, version),
                                                         n_chunks))]
    if noise is not None:
        x, _ = noisy_inputs(cubes_mk, np.zeros((len(cubes_mk), 1)), noise,
                            np.random.default_rng(seed), draws, cfg)
        groups = np.repeat(np.arange(len(cubes_mk)), draws)  # noisy_inputs' row order
        out.insert(0, Component.fit("observed", summary_statistics(x, n_chunks), groups))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--model-dir", required=True, type=Path)
    ap.add_argument("--n-sims", type=int, default=0, help="grow the dataset to this many runs")
    ap.add_argument("--noise-draws", type=int, default=4)
    ap.add_argument("--data-dir", type=Path, default=REPO / "data")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=0.0)
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the manifest")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    manifest_path = args.model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if manifest["preprocess_version"] != cfg.grid.preprocess_version:
        raise SystemExit(f"{args.config} preprocesses by {cfg.grid.preprocess_version}, the "
                         f"model by {manifest['preprocess_version']}: not its config")
    if args.n_sims:
        cfg.data.n_sims = args.n_sims
    path = dataset.build(cfg, args.data_dir, workers=args.workers, max_seconds=args.max_seconds)
    train = dataset.load(path, cfg, "train")
    if len(train["cubes"]) < 20:
        raise SystemExit(f"{len(train['cubes'])} accepted training cubes: too few for a "
                         "reference (grow the dataset with --n-sims)")
    noise = ThermalNoise(cfg, uv_maps(cfg, args.data_dir)) if cfg.noise.train else None
    n_chunks = 8
    comps = components(grid_cubes(train["cubes"], cfg), cfg, noise, args.noise_draws,
                       cfg.noise.seed + 7, n_chunks)
    source = (f"{len(train['cubes'])} training-split runs of {Path(args.config).name} "
              f"(dataset {path.name}, first {cfg.data.n_sims} runs)"
              + (f", {args.noise_draws} noise draws each" if noise else "")
              + "; each run left out in turn for the thresholds")
    ref = TrainingReference(n_chunks, tuple(comps), len(train["cubes"]), source)
    print(json.dumps({"components": {c.name: {"rows": c.n_rows, "threshold_d2": c.threshold_d2}
                                     for c in comps}, "source": source}, indent=1))
    if not args.dry_run:
        manifest["reference_statistics"] = ref.to_json()
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"wrote reference_statistics into {manifest_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
