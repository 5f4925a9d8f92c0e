"""One 21cmFAST v4 lightcone per call: parameters drawn from the priors, physical cuts applied.

What is simulated (and why these choices; numbers in docs/lightcones.md):
- 21cmFAST v4 ``const-zeta`` + ``size-tiny`` templates: a constant ionising efficiency ζ and a
  minimum virial temperature T_vir (the parametrisation 21cmPIE-Net varies), spin-temperature
  fluctuations ON (``USE_TS_FLUCT``): without them the IGM is assumed saturated-hot and L_X and
  E_0 leave no trace at all in the signal.
- HII_DIM = 16 in a 64 Mpc box (4 Mpc cells, the model grid's sky resolution) with 2× finer
  initial conditions; z 5.5–19 at 4 Mpc line-of-sight slices. On a shared 2-core machine this
  costs ~5 CPU-s per run; HII_DIM = 32 in a 128 Mpc box (the v4 dataset) barely more, ~6
  CPU-s: at these sizes fixed per-redshift costs dominate (`python -m bench.bench_lightcone_sims`).
- Five parameters vary with uniform priors (``config.default_priors``): Ω_m, log10 L_X, E_0,
  log10 T_vir, ζ. 21cmPIE-Net's sixth, the warm-dark-matter mass m_WDM, is NOT modelled:
  21cmFAST v4 exposes no WDM mass (v3's ``M_WDM`` global only acted through a power-spectrum
  cut-off that v4 removed), so the dataset is cold dark matter throughout.
- Cuts as in 21cmPIE-Net: Thomson optical depth τ ≤ 0.089 and global neutral fraction at the
  low-z end (z = 5.5) ≤ 0.1; rejected runs are recorded with their reason, not silently dropped.

The cube is resampled (service.lightcones.resample, the service's own code) onto the dataset
grid, a 2× finer nested version of the model grid, and stored as float16.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from service.lightcones import make_lightcone, resample

from .config import LightconeConfig

STATUS = {"pending": 0, "accepted": 1, "rejected_tau": 2, "rejected_xhi": 3, "failed": 4,
          "screened_tau": 5}


@dataclass
class SimResult:
    index: int
    status: int
    params: np.ndarray  # physical units, prior order
    seed: int
    tau: float
    xhi_lowz: float
    seconds: float
    cube: np.ndarray | None  # float16 dataset grid (n_xy, n_xy, n_los) or None
    error: str = ""


def draw(cfg: LightconeConfig, index: int) -> tuple[np.ndarray, int]:
    """Parameters and 21cmFAST seed of run ``index``: a pure function of (seed, index), so a
    resumed or re-ordered build simulates exactly the same runs."""
    rng = np.random.default_rng([cfg.seed, index])
    priors = cfg.priors()
    u = rng.random(len(priors))
    params = np.array([p.low + (p.high - p.low) * x for p, x in zip(priors, u)])
    return params, int(rng.integers(1, 2**31 - 1))


def inputs_for(cfg: LightconeConfig, params: np.ndarray, seed: int):
    import py21cmfast as p21c  # optional native extra (sim21): imported where it is used

    s = cfg.sim
    overrides = {p.key: float(v) for p, v in zip(cfg.priors(), params)}
    inputs = p21c.InputParameters.from_template(
        s.templates, random_seed=seed, HII_DIM=s.hii_dim, BOX_LEN=s.box_len,
        HIRES_TO_LOWRES_FACTOR=s.hires_factor, USE_TS_FLUCT=s.use_ts_fluct,
        N_STEP_TS=s.n_step_ts, N_THREADS=s.threads_per_sim, **overrides)
    return inputs.with_logspaced_redshifts(zmin=s.z_min,
                                          zmax=inputs.simulation_options.Z_HEAT_MAX)


def tau_of(p21c, inputs, z: np.ndarray, xhi: np.ndarray) -> float:
    order = np.argsort(z)
    return float(p21c.compute_tau(redshifts=z[order], global_xHI=xhi[order], inputs=inputs))


def run_with_tau_bound(p21c, lightconer, inputs, tau_max: float):
    """Run the lightcone node by node (high z → low z); stop as soon as τ must exceed
    ``tau_max``. Returns (lightcone, τ, x_HI at the lowest node, stopped_early).

    The bound: with recombinations off (INHOMO_RECO false) the mean neutral fraction only
    falls towards low z, so setting x_HI at every node not yet computed to its value at the
    last computed node over-estimates x_HI and *under*-estimates τ. If even that τ exceeds
    the cut, the full run would be rejected too — the cut is unchanged, only cheaper (the
    low-z nodes are never computed for runs that reionise early)."""
    z = np.asarray(inputs.node_redshifts, dtype=np.float64)
    lc = None
    for iz, _, _, lc in p21c.generate_lightcone(lightconer=lightconer, inputs=inputs,
                                                write=False, progressbar=False):
        if iz is None:
            continue
        xhi = np.asarray(lc.global_quantities["neutral_fraction"], dtype=np.float64).copy()
        xhi[iz + 1:] = xhi[iz]
        bound = tau_of(p21c, inputs, z, xhi)
        if iz + 1 < len(z) and bound > tau_max and not inputs.astro_options.INHOMO_RECO:
            return lc, bound, float(xhi[iz]), True
    xhi = np.asarray(lc.global_quantities["neutral_fraction"], dtype=np.float64)
    return lc, tau_of(p21c, inputs, z, xhi), float(xhi[np.argmin(z)]), False


def simulate(cfg: LightconeConfig, index: int) -> SimResult:
    """Run one lightcone; never raises (a crash is a ``failed`` record with the message)."""
    import py21cmfast as p21c  # optional native extra (sim21): imported where it is used

    params, seed = draw(cfg, index)
    t0 = time.process_time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = inputs_for(cfg, params, seed)
            lcn = p21c.RectilinearLightconer.between_redshifts(
                min_redshift=cfg.sim.z_min, max_redshift=cfg.sim.z_max,
                resolution=inputs.simulation_options.cell_size,
                cosmo=inputs.cosmo_params.cosmo, quantities=("brightness_temp",))
            lc, tau, xhi_lowz, early = run_with_tau_bound(p21c, lcn, inputs, cfg.sim.tau_max)
    except Exception as exc:  # noqa: BLE001 — a simulator failure is data about the prior
        return SimResult(index, STATUS["failed"], params, seed, np.nan, np.nan,
                         time.process_time() - t0, None, f"{type(exc).__name__}: {exc}")
    seconds = time.process_time() - t0
    if tau > cfg.sim.tau_max:
        return SimResult(index, STATUS["rejected_tau"], params, seed, tau, xhi_lowz, seconds,
                         None, "stopped early: τ lower bound" if early else "")
    if xhi_lowz > cfg.sim.xhi_lowz_max:
        return SimResult(index, STATUS["rejected_xhi"], params, seed, tau, xhi_lowz, seconds, None)
    record = make_lightcone(lc.lightcones["brightness_temp"], redshifts=lc.lightcone_redshifts,
                            cell_mpc=lc.cell_size)
    cube, _ = resample(record, cfg.grid.dataset_grid())
    return SimResult(index, STATUS["accepted"], params, seed, tau, xhi_lowz, seconds,
                     cube.astype(np.float16))


def simulator_provenance() -> dict[str, Any]:
    """What a dataset file records about its simulator. The version comes from the installed
    distribution's metadata, so opening a file needs no 21cmFAST build: without one it is
    None ("not installed"), and such a file can only hold rows written by other means (no
    simulation runs without it; the tests' synthetic datasets)."""
    try:
        sim_version = version("21cmFAST")
    except PackageNotFoundError:
        sim_version = None
    return {"simulator": "21cmFAST", "simulator_version": sim_version,
            "cpu_count": os.cpu_count()}
