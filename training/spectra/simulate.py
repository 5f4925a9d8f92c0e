"""Survey-spectrum simulator built from the real pipeline templates in ``../shared``, and its datasets.

Why a simulator: there is no labelled archive to download here, and the templates are exactly
what the SDSS and DESI pipelines fit to real spectra. A classifier trained on clean templates
fails on real data, so each spectrum is drawn from a population and goes through what a real
survey does to light:

  astro.py        line lists, templates, dust laws, line profiles (the shared physics)
  galaxies.py     passive, E+A, star-forming, starburst, Seyfert 2, LINER (BPT plane)
  quasars.py      quasars: forest, BAL, DLA/Lyman-limit systems, reddened, weak-line, hosts
  populations.py  stars, the list of populations, evaluation subsets
  instrument.py   resolution, sampling, sky, dichroic, noise, artefacts
  simulate.py     labels, one spectrum, cached datasets (this module)

→ ``service.spectra.make_spectrum`` → ``service.spectra.preprocess`` (the service's code).
Every effect is switchable (``config.Effects``). Each spectrum has its own generator seeded by
``(seed, split, index)``, so a dataset is deterministic whatever the number of workers and
whatever its size: datasets are cached in chunks, grow by adding chunks, and an interrupted
generation resumes from the chunks already written.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.spectra import (
    DEFAULT_GRID,
    PREPROCESS_VERSION,
    SpectrumError,
    make_spectrum,
    preprocess,
)
from service.spectra.preprocess import LogLambdaGrid

from .astro import (  # noqa: F401 — re-exported: the simulator's public names live here
    C_KMS,
    REPO,
    SHARED,
    Templates,
    air_to_vacuum,
    emission_lines,
    load_templates,
    sky_lines,
)
from .config import Effects, SimConfig
from .galaxies import galaxy_source, nearby_redshift
from .instrument import SURVEY_NAMES, SURVEYS, observe
from .labels import LABEL_NAMES, LABELS, STAR_SUBTYPES
from .populations import POPULATIONS, TOP_OF_POPULATION, star_source
from .quasars import HIGH_Z, qso_source

# Bump when the simulated distribution changes in a way the code hash would not capture
# (it is in every cache key, so cached datasets are regenerated).
# 2: galaxy populations (BPT), DLAs/LLS, reddened/host quasars, dichroic, population labels.
SIM_VERSION = 2
SIM_MODULES = ("astro", "galaxies", "quasars", "populations", "instrument", "labels", "simulate")

# Forced quasar populations need a redshift where the trait can be seen.
FORCED_QSO_Z = {"qso-high-z": (HIGH_Z, None), "qso-dla": (2.3, None), "qso-host": (0.05, 0.7)}


# --------------------------------------------------------------------------- one spectrum
def draw_snr(rng: np.random.Generator, cfg: SimConfig) -> float:
    if rng.random() < cfg.faint_fraction:
        lo, hi = cfg.snr_min, cfg.faint_snr_max
    else:
        lo, hi = cfg.snr_min, cfg.snr_max
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def draw_label(rng: np.random.Generator, cfg: SimConfig, population: str | None = None) -> int:
    tops = list(cfg.class_fractions)
    p = np.array([cfg.class_fractions[t] for t in tops], dtype=float)
    top = TOP_OF_POPULATION[population] if population else tops[rng.choice(len(tops), p=p / p.sum())]
    if top == "STAR":
        return LABEL_NAMES.index("STAR:" + STAR_SUBTYPES[rng.integers(len(STAR_SUBTYPES))])
    return LABEL_NAMES.index(top)


def draw_redshift(rng: np.random.Generator, label: int, tpl: Templates, cfg: SimConfig,
                  population: str | None = None) -> float:
    top = LABELS[label]["top"]
    if not cfg.effects.redshift:
        return 0.0
    if top == "GALAXY":
        if rng.random() < cfg.nearby_fraction:
            return nearby_redshift(rng, cfg)
        # Skewed to the SDSS/BOSS/DESI bright + LRG range but covering 0–z_max.
        return float(cfg.galaxy_z_max * rng.beta(1.3, 2.2))
    if top == "QSO":
        if population in FORCED_QSO_Z:
            lo, hi = FORCED_QSO_Z[population]
            return float(rng.uniform(lo, hi or cfg.qso_z_max))
        if rng.random() < cfg.qso_real_z_fraction:
            z0 = tpl.qso_z[rng.integers(len(tpl.qso_z))]
            z = (1 + z0) * math.exp(rng.normal(0, 0.05)) - 1
        else:
            z = rng.uniform(0.05, cfg.qso_z_max)
        return float(np.clip(z, 0.05, cfg.qso_z_max))
    return float(rng.normal(0.0, 120.0) / C_KMS)  # radial velocity


def draw_source(rng: np.random.Generator, tpl: Templates, label: int, z: float, cfg: SimConfig,
                population: str | None, meta: dict):
    """The rest-frame source of ``label``; ``meta`` receives its population and flags."""
    top = LABELS[label]["top"]
    if top == "GALAXY":
        g = galaxy_source(rng, tpl, cfg, cfg.effects, population)
        meta["population"] = g.population
        return g.source
    if top == "QSO":
        src = qso_source(rng, tpl, z, cfg, cfg.effects, meta, force=population)
        return src
    meta["population"] = "star"
    return star_source(rng, tpl, LABELS[label]["subtype"], cfg, cfg.effects)


def simulate_one(seed: int, split: int, index: int, cfg: SimConfig,
                 survey_name: str | None = None, label: int | None = None,
                 snr: float | None = None, z: float | None = None, population: str | None = None):
    """(Spectrum, meta dict) for one simulated object; deterministic in (seed, split, index).

    Any of survey, label, S/N, z and population (a name in ``POPULATIONS``) can be pinned.
    """
    rng = np.random.default_rng([seed, split, index])
    tpl = load_templates()
    if survey_name is None:
        names = list(cfg.surveys)
        p = np.array([cfg.surveys[n] for n in names], dtype=float)
        survey_name = names[rng.choice(len(names), p=p / p.sum())]
    survey = SURVEYS[survey_name]
    label = draw_label(rng, cfg, population) if label is None else label
    z = draw_redshift(rng, label, tpl, cfg, population) if z is None else z
    snr = draw_snr(rng, cfg) if snr is None else snr
    meta: dict[str, Any] = {"survey": survey_name, "label": label, "z": z, "snr": snr,
                            "object_id": f"sim-{split}-{index}", "bal": 0, "weak_line": 0, "dla": 0}
    src = draw_source(rng, tpl, label, z, cfg, population, meta)
    lam, flux, ivar, mask = observe(rng, src, z, survey, snr, cfg.effects, LABELS[label]["top"])
    spec = make_spectrum(lam, flux, ivar, mask, meta={"survey": survey_name,
                                                      "object_id": meta["object_id"]})
    return spec, meta


# ------------------------------------------------------------------------------ datasets
SPLITS = {"train": 0, "val": 1, "test": 2, "robust": 3, "baseline": 4}
CHUNK = 200  # spectra per cached chunk; part of the cache key (chunk boundaries must agree)
COLUMNS = (("label", np.int16), ("z", np.float32), ("snr", np.float32), ("survey", np.int8),
           ("bal", np.int8), ("weak_line", np.int8), ("dla", np.int8), ("population", np.int16))


def _chunk(args: tuple) -> dict[str, np.ndarray]:
    seed, split, start, stop, cfg_dict, grid_dict, fixed = args
    cfg = _sim_from_dict(cfg_dict)
    grid = LogLambdaGrid.from_manifest(grid_dict)
    n = stop - start
    X = np.zeros((n, 2, grid.npix), dtype=np.float16)
    out = {k: np.zeros(n, dtype=d) for k, d in COLUMNS}
    for j, i in enumerate(range(start, stop)):
        for attempt in range(5):
            try:
                spec, meta = simulate_one(seed, split, i + attempt * 10_000_000, cfg, **fixed)
                x = preprocess(spec, grid).x
                break
            except SpectrumError:
                continue
        X[j] = x
        meta["survey"] = SURVEY_NAMES.index(meta["survey"])
        meta["population"] = POPULATIONS.index(meta["population"])
        for k, _ in COLUMNS:
            out[k][j] = meta[k]
    out["x"] = X
    return out


def _sim_from_dict(d: dict) -> SimConfig:
    d = dict(d)
    d["effects"] = Effects(**d["effects"])
    return SimConfig(**d)


def dataset_key(cfg: SimConfig, seed: int, split: str, grid: LogLambdaGrid,
                fixed: dict | None = None) -> str:
    """Everything a spectrum depends on — but not the dataset size, so datasets can grow."""
    blob = json.dumps({"sim": asdict(cfg), "seed": seed, "split": split,
                       "grid": grid.to_manifest(), "pp": PREPROCESS_VERSION, "chunk": CHUNK,
                       "fixed": fixed or {}, "version": SIM_VERSION, "code": _code_hash()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _code_hash() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in SIM_MODULES:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()[:12]


def _chunk_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"{start:08d}-{stop:08d}.npz"


def _save_chunk(path: Path, part: dict[str, np.ndarray]) -> None:
    """Atomic write: a killed run leaves either a whole chunk or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **part)
    os.replace(tmp, path)


def _load_chunk(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _simulate_chunks(jobs: list[tuple], workers: int, on_part) -> None:
    """Run ``_chunk`` on every job (forked pool when workers > 1), handing each part on."""
    if workers > 1 and len(jobs) > 1:
        load_templates()  # load once in the parent; forked workers inherit it
        with mp.get_context("fork").Pool(workers) as pool:
            for job, part in zip(jobs, pool.imap(_chunk, jobs)):
                on_part(job, part)
        return
    for job in jobs:
        on_part(job, _chunk(job))


def generate(cfg: SimConfig, n: int, seed: int, split: str, *, grid: LogLambdaGrid = DEFAULT_GRID,
             workers: int = 1, cache_dir: str | Path | None = REPO / "data", progress: bool = True,
             fixed: dict | None = None) -> dict[str, np.ndarray]:
    """Simulate + preprocess ``n`` spectra, cached in chunks of ``CHUNK`` under ``cache_dir``.

    The cache folder is keyed by everything a spectrum depends on except ``n``: asking for more
    spectra later only simulates the missing chunks, and a killed run resumes where it stopped.
    ``fixed`` pins simulate_one arguments (survey_name, label, snr, z, population).
    """
    fixed = fixed or {}
    bounds = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / f"spectra-{split}-{dataset_key(cfg, seed, split, grid, fixed)}"
    parts: dict[int, dict[str, np.ndarray]] = {}
    for s, e in bounds:
        if folder is not None and _chunk_path(folder, s, e).exists():
            parts[s] = _load_chunk(_chunk_path(folder, s, e))
    jobs = [(seed, SPLITS[split], s, e, asdict(cfg), grid.to_manifest(), fixed)
            for s, e in bounds if s not in parts]
    bar = tqdm(total=n, initial=n - sum(j[3] - j[2] for j in jobs), desc=f"simulate {split}",
               unit="spec", disable=not progress, mininterval=2.0)

    def keep(job: tuple, part: dict[str, np.ndarray]) -> None:
        if folder is not None:
            _save_chunk(_chunk_path(folder, job[2], job[3]), part)
        parts[job[2]] = part
        bar.update(job[3] - job[2])

    _simulate_chunks(jobs, workers, keep)
    bar.close()
    ordered = [parts[s] for s, _ in bounds]
    return {k: np.concatenate([p[k] for p in ordered]) for k in ordered[0]}


def describe(cfg: SimConfig) -> str:
    """One paragraph for the manifest's training.data field."""
    on = [k for k, v in asdict(cfg.effects).items() if v]
    return (
        f"Simulated survey spectra (simulator v{SIM_VERSION}) from real pipeline templates (SDSS "
        "spEigenGal/QSO/Star/CVstar, Redrock QSO LOZ/HIZ and STAR archetypes) with emission lines "
        f"from SDSS emlines.par; galaxy populations {cfg.galaxy_populations}; "
        f"surveys {cfg.surveys}; class fractions {cfg.class_fractions}; median S/N per "
        f"Δlog10λ=1e-4 pixel {cfg.snr_min}–{cfg.snr_max} (log-uniform, {cfg.faint_fraction:.0%} "
        f"extra at {cfg.snr_min}–{cfg.faint_snr_max}); effects on: {', '.join(on)}; "
        f"preprocessed with service.spectra.preprocess v{PREPROCESS_VERSION}."
    )
