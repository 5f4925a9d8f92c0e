"""HDF5 lightcones: 21cmFAST's own files (v3 and v4 layouts) and a plain ``hdf5-cube``.

``21cmfast-h5`` — what 21cmFAST writes with ``LightCone.save``:
  v3 (e.g. ../shared/data/21cmfast/simrun_0.h5): ``lightcones/brightness_temp`` (N, N, n_los)
     mK, ``distances`` (comoving Mpc of each slice), parameter groups ``user_params``,
     ``cosmo_params``, ``astro_params``, ``flag_options``, ``_globals`` as attributes;
  v4: root attribute ``lightcone = True``, ``lightcones/brightness_temp``,
     ``lightcone_distances`` (Mpc), parameters under ``InputParameters/<struct>`` (``cosmo_params``,
     ``astro_params``, ``simulation_options``, ...), buffer slices in ``lowz_buffer_pixels`` /
     ``highz_buffer_pixels`` (removed here, as ``LightCone.from_file`` does).
  Slice redshifts come from the distances through the file's own cosmology (Planck15 with the
  file's h, Ω_m, Ω_b, as 21cmFAST does); the cell size is BOX_LEN / HII_DIM.
``hdf5-cube`` — anything else with a 3D root dataset ``brightness_temp`` or ``cube`` (mK), an
  optional ``redshifts`` or ``frequencies_mhz`` dataset and a ``cell_mpc`` attribute.

Safety: the file is opened from the in-memory bytes and vetted by :mod:`.hdf5_guard` before
any name is looked up (no external links, external storage, virtual datasets, stray soft links
or unknown filters: an upload can never make the server open another file); the dataset's
declared shape is checked before reading, and it is read straight into one float32 array
(``read_direct``), so a compressed dataset cannot inflate beyond the limit.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import h5py
import numpy as np
from astropy.cosmology import Planck15

from service.io.source import Source

from ..errors import LightconeError
from ..lightcone import Lightcone, check_cube_size, make_lightcone
from ..registry import register_reader
from .hdf5_guard import open_vetted

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PARAM_GROUPS_V3 = ("cosmo_params", "astro_params", "user_params", "flag_options", "_globals")
MAX_AXIS_LEN = 1 << 20


def _open(source: Source):
    return open_vetted(source.data, source.name)


def _is_hdf5(source: Source) -> bool:
    return source.data[:8] == HDF5_MAGIC


def _layout(f) -> str | None:
    if "lightcones" in f and "brightness_temp" in f["lightcones"]:
        if "InputParameters" in f or "lightcone_distances" in f:
            return "v4"
        return "v3"
    return None


def identify_21cmfast(source: Source) -> bool:
    if not _is_hdf5(source):
        return False
    with _open(source) as f:
        return _layout(f) is not None


def identify_hdf5_cube(source: Source) -> bool:
    if not _is_hdf5(source):
        return False
    with _open(source) as f:
        return any(k in f for k in ("brightness_temp", "cube"))


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, (bool, int, float, str)) else None


def _attrs(group) -> dict[str, Any]:
    out = {}
    for k, v in group.attrs.items():
        p = _plain(v)
        if p is not None:
            out[str(k)] = p
    return out


def _read_cube(ds, source: Source, los: slice = slice(None)) -> np.ndarray:
    """The dataset (or a line-of-sight slice of it) as one float32 array, size checked first."""
    if not isinstance(ds, h5py.Dataset):
        raise LightconeError("missing_dataset", f"{ds.name} is not a dataset", source=source.name)
    if ds.dtype.kind not in "fiu":
        raise LightconeError("bad_dtype", f"{ds.name} has dtype {ds.dtype}", source=source.name)
    if ds.ndim != 3:
        raise LightconeError("bad_shape", f"{ds.name} has shape {ds.shape}; expected 3D",
                             source=source.name)
    n_los = len(range(*los.indices(ds.shape[2])))
    shape = (ds.shape[0], ds.shape[1], n_los)
    check_cube_size(shape, source.max_bytes, source=source.name)
    out = np.empty(shape, dtype=np.float32)
    ds.read_direct(out, source_sel=np.s_[:, :, los])
    return out


def _read_axis(ds, source: Source) -> np.ndarray:
    if ds.ndim != 1 or ds.shape[0] > MAX_AXIS_LEN or ds.dtype.kind not in "fiu":
        raise LightconeError("bad_axis", f"{ds.name}: shape {ds.shape} dtype {ds.dtype}",
                             source=source.name)
    return np.asarray(ds[()], dtype=np.float64)


@lru_cache(maxsize=32)
def _distance_table(h: float, om: float, ob: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, comoving distance Mpc) on a fine grid to z = 200, by cumulative trapezoid of
    c/H(z): astropy's per-point quadrature costs ~0.2 s for a table, this ~2 ms."""
    cosmo = Planck15.clone(H0=100.0 * h, Om0=om, Ob0=ob)
    z = np.concatenate([np.linspace(0.0, 50.0, 50001), np.linspace(50.0, 200.0, 15001)[1:]])
    f = cosmo.inv_efunc(z) * (299792.458 / (100.0 * h))
    d = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(z))])
    return z, d


def distances_to_redshifts(d_mpc: np.ndarray, cosmo_attrs: dict[str, Any],
                           source: str | None = None) -> np.ndarray:
    """Comoving distance (Mpc) → redshift in the file's cosmology (Planck15 + h, Ω_m, Ω_b,
    as 21cmFAST builds its own)."""
    try:
        h = float(cosmo_attrs.get("hlittle", 0.6766))
        om = float(cosmo_attrs.get("OMm", 0.30964))
        ob = float(cosmo_attrs.get("OMb", 0.04897))
        if not (0 < h < 2 and 0 < ob < om < 1):
            raise ValueError(f"h={h}, OMm={om}, OMb={ob}")
        zgrid, dgrid = _distance_table(h, om, ob)
    except (TypeError, ValueError) as exc:
        raise LightconeError("bad_units", f"cosmology attributes: {exc}", source=source) from None
    if not (np.isfinite(d_mpc).all() and (d_mpc > 0).all()):
        raise LightconeError("bad_axis", "distances must be finite and > 0", source=source)
    # 21cmFAST writes slice distances increasing along the cube's last axis; reversed or
    # shuffled ones would label every slice with another slice's redshift
    if not (np.diff(d_mpc) > 0).all():
        raise LightconeError("bad_axis", "distances must increase strictly along the line "
                             "of sight", source=source)
    if d_mpc.max() > dgrid[-1]:
        raise LightconeError("bad_axis", f"distance {d_mpc.max():.0f} Mpc beyond z = 200",
                             source=source)
    return np.interp(d_mpc, dgrid, zgrid)


def read_21cmfast(source: Source) -> Lightcone:
    with _open(source) as f:
        layout = _layout(f)
        if layout is None:
            raise LightconeError("missing_dataset", "no lightcones/brightness_temp",
                                 source=source.name)
        if layout == "v4":
            groups = f.get("InputParameters", {})
            params = {name: _attrs(groups[name]) for name in groups}
            lo = int(f.attrs.get("lowz_buffer_pixels", 0) or 0)
            hi = int(f.attrs.get("highz_buffer_pixels", 0) or 0)
            if "lightcone_distances" not in f:
                raise LightconeError("missing_dataset", "no lightcone_distances",
                                     source=source.name)
            dist_all = _read_axis(f["lightcone_distances"], source)
            los = slice(lo, len(dist_all) - hi)
            sim = params.get("simulation_options", params.get("user_params", {}))
            version = _plain(f.attrs.get("__version__"))
            seed = (_plain(f["InputParameters"].attrs.get("random_seed"))
                    if "InputParameters" in f else None)
        else:
            params = {name: _attrs(f[name]) for name in PARAM_GROUPS_V3 if name in f}
            if "distances" not in f:
                raise LightconeError("missing_dataset", "no distances", source=source.name)
            dist_all = _read_axis(f["distances"], source)
            los = slice(None)
            sim = params.get("user_params", {})
            version = _plain(f.attrs.get("version"))
            seed = _plain(f.attrs.get("random_seed"))
        ds = f["lightcones"]["brightness_temp"]
        if ds.ndim != 3 or len(dist_all) != ds.shape[2]:
            raise LightconeError("bad_shape", f"brightness_temp {ds.shape} vs "
                                 f"{len(dist_all)} distances", source=source.name)
        cube = _read_cube(ds, source, los)
        dist = dist_all[los]
    z = distances_to_redshifts(dist, params.get("cosmo_params", {}), source.name)
    try:
        cell = float(sim["BOX_LEN"]) / float(sim["HII_DIM"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        cell = None
    flat = {**params.get("cosmo_params", {}), **params.get("astro_params", {})}
    meta = {"format": "21cmfast-h5", "layout": layout, "simulator_version": version,
            "random_seed": seed, "params": {k: v for k, v in flat.items()
                                             if isinstance(v, (int, float))
                                             and not isinstance(v, bool)},
            "parameter_groups": params, "distances_mpc": [float(dist[0]), float(dist[-1])]}
    return make_lightcone(cube, z, cell, meta, source=source.name)


def read_hdf5_cube(source: Source) -> Lightcone:
    with _open(source) as f:
        name = "brightness_temp" if "brightness_temp" in f else "cube"
        cube = _read_cube(f[name], source)
        z = _read_axis(f["redshifts"], source) if "redshifts" in f else None
        nu = _read_axis(f["frequencies_mhz"], source) if "frequencies_mhz" in f else None
        cell = _plain(f.attrs.get("cell_mpc"))
        meta = {"format": "hdf5-cube", "dataset": name}
    return make_lightcone(cube, z, cell, meta, frequencies_mhz=nu, source=source.name)


register_reader("21cmfast-h5", identify_21cmfast, read_21cmfast, priority=10,
                description="21cmFAST LightCone.save output (v3 and v4 layouts)")
register_reader("hdf5-cube", identify_hdf5_cube, read_hdf5_cube, priority=0,
                description="HDF5 with a 3D brightness_temp|cube dataset (+ redshifts, cell_mpc)")
