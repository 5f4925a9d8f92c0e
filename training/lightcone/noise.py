"""The noise option: SKA1-Low thermal noise and foreground-wedge removal with tools21cm.

``observe(cube, noise, rng)`` turns a noiseless lightcone on the model grid (mK) into what an
SKA1-Low (AA4) observation of ``obs_time_h`` would give:
1. thermal noise (:class:`ThermalNoise`): per frequency channel, tools21cm's ``noise_map``
   (radiometer noise on the gridded uv coverage of a daily track, natural weighting,
   Blackman-Harris uv taper) converted to mK with tools21cm's ``jansky_2_kelvin``;
2. the mean of every channel removed (an interferometer does not measure the k = 0 mode; the
   lightcone-2 preprocessing removes it again, so it also holds for data sent to the service);
3. optionally (``NoiseConfig.wedge``) foreground-wedge removal (:func:`wedge_remove`).

The uv coverage is the slow part (~5–25 CPU-s per redshift for 512 stations), so it is computed
at ``n_uv_redshifts`` redshifts across the band, cached under data/, and each channel uses the
nearest one; the noise amplitude itself uses each channel's own redshift and width. That and
the coarse visibility integration (``int_time_s``) are the approximations made here.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
from astropy.cosmology import Planck18

from service.lightcones import NU21_MHZ, LightconeGrid
from service.lightcones.preprocess import overlap_matrix

from .config import LightconeConfig

UV_MAP_MIN = 0.01  # tools21cm.apply_uv_response_noise's default: uv cells below are unsampled


def _key(cfg: LightconeConfig) -> str:
    """Hash of what the uv coverage depends on (not the observing time, seed or wedge)."""
    nc = cfg.noise
    d = {"uv": [nc.subarray, nc.total_int_time_h, nc.int_time_s, nc.declination_deg,
                nc.n_uv_redshifts], "grid": cfg.grid.model_grid().to_manifest()}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def uv_maps(cfg: LightconeConfig, cache_dir: Path, log=print) -> dict[str, np.ndarray]:
    """{'z': (k,), 'uv': (k, n, n), 'n_ant': ()} — computed once per (uv, grid) config."""
    path = cache_dir / f"uv-{_key(cfg)}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    import tools21cm as t2c  # optional native extra (sim21): imported where it is used

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


class ThermalNoise:
    """Thermal-noise lightcones on the model grid, many at once.

    Why not call ``tools21cm.noise_map`` per channel: it costs ~0.16 s a call, 20 s per
    128-channel cube — too slow to give every training batch fresh noise. Its result is
    linear in the per-visibility rms, so the work splits into per-channel constants, taken
    from tools21cm itself (``sigma_noise_radio`` for the visibility rms, ``kelvin_jansky_
    conversion`` for Jy → mK, ``signal_window`` for the uv taper), and the random part, which
    is the last lines of ``noise_map`` (complex Gaussian per uv cell / √(uv count), unsampled
    cells zeroed, taper, inverse FFT, × √(t_int / t_obs)) done for all channels in one array
    operation. Drawn from the same generator it reproduces ``noise_map`` to rounding
    (tests/training/lightcone/test_lc_noise.py), including the order of the random draws."""

    def __init__(self, cfg: LightconeConfig, uvs: dict[str, np.ndarray],
                 obs_time_h: float | None = None):
        import tools21cm as t2c  # optional native extra (sim21): imported where it is used
        from tools21cm import radio_telescope_noise as rtn

        grid, nc = cfg.grid.model_grid(), cfg.noise
        self.grid = grid
        self.obs_time_h = float(obs_time_h if obs_time_h is not None else nc.obs_time_h)
        zs = grid.redshifts
        depth = np.abs(np.diff(grid.nu_edges))
        self.uv_index = np.array([int(np.argmin(np.abs(uvs["z"] - z))) for z in zs])
        n_ant = int(uvs["n_ant"])
        amp = np.empty(len(zs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k, z in enumerate(zs):
                _, rms_vis = rtn.sigma_noise_radio(float(z), float(depth[k]), self.obs_time_h,
                                                   nc.int_time_s, N_ant=n_ant, verbose=False)
                jy_per_mk = t2c.kelvin_jansky_conversion(grid.n_xy, float(z),
                                                         boxsize=grid.extent_mpc)
                amp[k] = (rms_vis * math.sqrt(nc.int_time_s / 3600.0 / self.obs_time_h)
                          / jy_per_mk)
        self.amplitude = amp  # mK per unit Gaussian, per channel
        uv = np.asarray(uvs["uv"], dtype=np.float64)
        with np.errstate(divide="ignore"):
            w = np.where(uv < UV_MAP_MIN, 0.0, 1.0 / np.sqrt(np.where(uv > 0, uv, 1.0)))
        taper = np.fft.fftshift(rtn.signal_window(grid.n_xy, "blackmanharris", ndim=2))
        self.response = w * taper  # (n_uv, n, n): natural weighting × taper

    def sample(self, rng: np.random.Generator, n: int,
               obs_time_h: np.ndarray | None = None) -> np.ndarray:
        """``n`` independent noise cubes (n, n_xy, n_xy, n_los) float32, mK; with
        ``obs_time_h`` (n,) each at its own observing time (thermal noise ∝ 1/√t)."""
        g = self.grid
        z = rng.normal(size=(n, g.n_los, 2, g.n_xy, g.n_xy))
        four = (z[:, :, 0] + 1j * z[:, :, 1]) * self.response[self.uv_index]
        maps = np.fft.ifft2(four).real * self.amplitude[None, :, None, None]
        if obs_time_h is not None:
            maps *= np.sqrt(self.obs_time_h / np.asarray(obs_time_h, dtype=np.float64)
                            )[:, None, None, None]
        return np.ascontiguousarray(maps.transpose(0, 2, 3, 1), dtype=np.float32)

    def draw_times(self, rng: np.random.Generator, n: int, time_range: list[float]
                   ) -> np.ndarray | None:
        """Observing times log-uniform in ``time_range`` (None: the fixed ``obs_time_h``)."""
        if not time_range:
            return None
        lo, hi = np.log(time_range[0]), np.log(time_range[1])
        return np.exp(rng.uniform(lo, hi, n))

    def rms(self) -> np.ndarray:
        """Expected per-pixel rms per channel (mK): Parseval on the response."""
        r2 = (np.abs(self.response[self.uv_index]) ** 2).sum(axis=(1, 2))
        return self.amplitude * np.sqrt(2.0 * r2) / self.grid.n_xy ** 2 / math.sqrt(2.0)


def comoving_edges(grid: LightconeGrid, omm: float) -> np.ndarray:
    """Comoving distance (Mpc) of the grid's channel edges, increasing redshift first.

    astropy's Planck18 with Ω_m set (flat): 21cmFAST's own cosmology is Planck18-like, and the
    wedge filter only needs distances at the ~1% level."""
    cosmo = Planck18.clone(Om0=omm)
    z_edges = NU21_MHZ / grid.nu_edges[::-1] - 1.0  # ascending redshift
    return np.asarray(cosmo.comoving_distance(z_edges).to_value("Mpc"))


def wedge_remove(cube_mk: np.ndarray, grid: LightconeGrid, omm: float = 0.31,
                 chunk_cells: int | None = None) -> np.ndarray:
    """Foreground-wedge removal of a model-grid cube (n_xy, n_xy, n_los; frequency ascending).

    tools21cm's ``rolling_wedge_removal_lightcone`` assumes cubic comoving voxels (its k_∥
    axis is built from ``cell_size``), while the model grid's ~1 MHz channels are 7–15 Mpc
    deep for 4 Mpc sky cells. So: channels → cubic comoving cells of ``grid.cell_mpc`` along
    the line of sight (overlap averaging, i.e. piecewise constant; the sky mean per slice is
    kept), tools21cm's removal there, then overlap-averaged back onto the channels. ``omm`` is
    the fiducial Ω_m of the distances and of tools21cm's wedge slope — an observer's choice,
    not the cube's true value (which is what the model infers). ``chunk_cells`` is tools21cm's
    ``chunk_length`` (its default: the sky size in cells); it sets the k_∥ resolution and the
    Blackman buffer, buffer ≈ (idx − 1)/(chunk_cells · cell) with idx where the taper's power
    first falls below 1e-10 (7/16 of the Nyquist k_∥ for 16 cells, 18/128 for 128)."""
    import tools21cm as t2c  # optional native extra (sim21): imported where it is used

    up, down, z_fine = cubic_regrid(grid, omm)
    cube_z = np.asarray(cube_mk, dtype=np.float64)[:, :, ::-1]  # ascending redshift
    fine = cube_z @ up.T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = t2c.rolling_wedge_removal_lightcone(fine.astype(np.float32), z_fine,
                                                    cell_size=grid.cell_mpc, OMm=omm,
                                                    chunk_length=chunk_cells)
    back = np.asarray(clean, dtype=np.float64) @ down.T
    return np.ascontiguousarray(back[:, :, ::-1], dtype=np.float32)


def cubic_regrid(grid: LightconeGrid, omm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(up, down, z): channels (ascending z) → cells of ``grid.cell_mpc`` comoving Mpc along
    the line of sight and back, as overlap-averaging matrices, and the cells' redshifts."""
    d_edges = comoving_edges(grid, omm)
    cell = grid.cell_mpc
    n_fine = math.ceil((d_edges[-1] - d_edges[0]) / cell)
    f_edges = d_edges[0] + cell * np.arange(n_fine + 1)
    up = overlap_matrix(d_edges, f_edges)
    up /= np.clip(up.sum(axis=1, keepdims=True), 1e-12, None)  # last cell overhangs the band
    down = overlap_matrix(f_edges, d_edges)
    z_dense = np.linspace(NU21_MHZ / grid.nu_max_mhz - 1.0, NU21_MHZ / grid.nu_min_mhz - 1.0,
                          2048)
    d_dense = Planck18.clone(Om0=omm).comoving_distance(z_dense).to_value("Mpc")
    z_fine = np.interp(0.5 * (f_edges[1:] + f_edges[:-1]), d_dense, z_dense)
    return up, down, z_fine


def observe(cube_mk: np.ndarray, grid: LightconeGrid, noise: ThermalNoise | None,
            rng: np.random.Generator, *, wedge: bool = False, omm: float = 0.31) -> np.ndarray:
    """What an observation of a model-grid cube (n_xy, n_xy, n_los, mK) gives: + thermal noise
    (none if ``noise`` is None), each channel's mean removed, optionally the wedge removed."""
    out = np.array(cube_mk, dtype=np.float64)
    if noise is not None:
        out += noise.sample(rng, 1)[0]
    out -= out.mean(axis=(0, 1), keepdims=True)
    if wedge:
        out = wedge_remove(out, grid, omm)
    return out.astype(np.float32)
