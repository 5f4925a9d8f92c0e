"""The noise option: SKA1-Low thermal noise and foreground-wedge removal with tools21cm.

``observe(cube)`` turns a noiseless lightcone on the model grid (mK) into what an SKA1-Low
(AA4) observation of ``obs_time_h`` would give after foreground avoidance:
1. thermal noise: per frequency channel, tools21cm's ``noise_map`` (radiometer noise on the
   gridded uv coverage of a daily track, natural weighting) converted to mK;
2. the mean of every channel removed (an interferometer does not measure the k = 0 mode);
3. wedge removal (off by default, see below): tools21cm's ``rolling_wedge_removal_lightcone`` zeroes the foreground wedge
   (k_∥ below the horizon line, plus a Blackman-taper buffer) channel by channel.

Wedge removal is OFF by default (``NoiseConfig.wedge``): tools21cm's rolling removal assumes
cubic comoving voxels, and the model grid's ~1 MHz channels are 7–15 Mpc deep against 4 Mpc sky
cells, so applied there it removes almost all the signal (measured: a 10 mK white cube came out
at 0.1 mK rms). Done right it belongs on the simulator's native comoving grid before the
frequency binning — not implemented.

The uv coverage is the slow part (~5–25 CPU-s per redshift for 512 stations), so it is computed
at ``n_uv_redshifts`` redshifts across the band, cached under data/, and each channel uses the
nearest one; the noise amplitude itself uses each channel's own redshift and width. That and
the coarse visibility integration (``int_time_s``) are the approximations made here.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from .config import LightconeConfig


def _key(cfg: LightconeConfig) -> str:
    d = {"noise": cfg.noise.__dict__, "grid": cfg.grid.model_grid().to_manifest()}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def uv_maps(cfg: LightconeConfig, cache_dir: Path, log=print) -> dict[str, np.ndarray]:
    """{'z': (k,), 'uv': (k, n, n), 'n_ant': ()} — computed once per (noise, grid) config."""
    path = cache_dir / f"uv-{_key(cfg)}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    import tools21cm as t2c

    grid, nc = cfg.grid.model_grid(), cfg.noise
    zs = np.linspace(grid.redshifts.min(), grid.redshifts.max(), nc.n_uv_redshifts)
    uvs, n_ant = [], 0
    for z in zs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uv, n_ant = t2c.get_uv_map(grid.n_xy, float(z), subarray_type=nc.subarray,
                                       total_int_time=nc.total_int_time_h,
                                       int_time=nc.int_time_s, boxsize=grid.extent_mpc,
                                       declination=nc.declination_deg, verbose=False)
        uvs.append(uv)
        log(f"uv coverage at z = {z:.2f} done")
    out = {"z": zs, "uv": np.stack(uvs), "n_ant": np.array(n_ant)}
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def observe(cube_mk: np.ndarray, cfg: LightconeConfig, uvs: dict[str, np.ndarray],
            rng: np.random.Generator, omm: float = 0.31) -> np.ndarray:
    """Noisy, wedge-removed version of a model-grid cube (n_xy, n_xy, n_los) in mK."""
    import tools21cm as t2c

    grid, nc = cfg.grid.model_grid(), cfg.noise
    zs = grid.redshifts
    depth = np.abs(np.diff(grid.nu_edges))
    noisy = np.array(cube_mk, dtype=np.float64)
    for k, z in enumerate(zs):
        j = int(np.argmin(np.abs(uvs["z"] - z)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n2d = t2c.noise_map(grid.n_xy, float(z), float(depth[k]), obs_time=nc.obs_time_h,
                                subarray_type=nc.subarray, boxsize=grid.extent_mpc,
                                total_int_time=nc.total_int_time_h, int_time=nc.int_time_s,
                                uv_map=uvs["uv"][j], N_ant=int(uvs["n_ant"]), verbose=False,
                                seed=rng)
            noisy[:, :, k] += t2c.jansky_2_kelvin(n2d, float(z), boxsize=grid.extent_mpc)
    # an interferometer has no zero-spacing baseline: the mean of each channel is not measured
    noisy -= noisy.mean(axis=(0, 1), keepdims=True)
    if nc.wedge:
        order = np.argsort(zs)  # tools21cm wants increasing redshift
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clean = t2c.rolling_wedge_removal_lightcone(noisy[:, :, order], zs[order],
                                                        cell_size=grid.cell_mpc, OMm=omm)
        noisy[:, :, order] = clean
    return noisy.astype(np.float32)
