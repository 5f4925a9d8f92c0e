"""Canonical lightcone preprocessing: any cube onto the model's grid, then a fixed scaling.

The single copy shared by training (``training.lightcone``) and the service. Change anything
that alters the numbers and bump :data:`PREPROCESS_VERSION`; manifests record it and the
lightcone pipeline refuses a model trained with another version.

The model grid (:class:`LightconeGrid`, declared in the manifest):
  sky: ``n_xy`` × ``n_xy`` cells of ``cell_mpc`` comoving Mpc: the model's *field*. A cube
       whose sky is wider than the field is cut into sky patches of the field's size
       (:func:`preprocess_patches`, :class:`SkyPatches`): up to MAX_PATCHES_PER_AXIS per axis,
       spread evenly from edge to edge (overlapping where the field does not divide the sky),
       so the whole sky is looked at instead of a silently cropped corner. The service runs the
       model on every patch and combines the answers; :func:`preprocess` (training, one
       simulation box = one field) keeps the first patch and says so in its notes;
  line of sight: ``n_los`` bins uniform in observed frequency between ``nu_min_mhz`` and
       ``nu_max_mhz`` — frequency, not distance, because the distance↔redshift mapping depends
       on Ω_m, one of the parameters to infer; an observer only knows frequencies.
Resampling is by overlap-weighted averaging (each output cell is the mean of the input cells
it covers, weighted by the overlapping length), separately per axis. It is exact for nested
grids (so dataset-grid → model-grid equals simulator → model-grid), conserves the mean and
never invents structure finer than the input. A cube that does not cover the grid is refused
(``no_grid_overlap``): extrapolating a lightcone would be making data up.

Scaling: x = clip(T_b / scale_mk, ±CLIP) with a fixed ``scale_mk`` — no per-cube
normalisation, since the absolute brightness temperature carries the heating (L_X, E_0) and
ionisation (ζ, T_vir) information the regressor needs.

Versions (a manifest names one; both stay servable, :data:`PREPROCESS_VERSIONS`):
  ``lightcone-1``: resample → scale → clip (noiseless simulations, the sky mean kept);
  ``lightcone-2``: resample → subtract each channel's sky mean → scale → clip. An
       interferometer has no zero-spacing baseline, so the mean of a channel (the global
       signal) is never in observed data; a model meant for observations must not depend on
       it, and removing it here makes a simulated cube and an observed one look alike.

Model input: float32 (1, n_xy, n_xy, n_los) per cube (channel first, for Conv3d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import LightconeError
from .lightcone import NU21_MHZ, Lightcone

PREPROCESS_VERSIONS = ("lightcone-1", "lightcone-2")  # every version this code can run
# what ``preprocess`` does when no version is named (the first models' contract); a pipeline
# serving a model passes the manifest's own version
PREPROCESS_VERSION = "lightcone-1"
CLIP = 10.0
COVER_TOL = 1e-6  # relative slack when checking that the input covers the grid
# Sky patches per axis at most: 4 × 4 = 16 model inputs per cube. A wider sky is still spanned
# edge to edge, with gaps between the patches, and the answer says what fraction was seen.
MAX_PATCHES_PER_AXIS = 4


@dataclass(frozen=True)
class LightconeGrid:
    n_xy: int
    cell_mpc: float
    n_los: int
    nu_min_mhz: float
    nu_max_mhz: float
    scale_mk: float = 100.0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.n_xy, self.n_xy, self.n_los)

    @property
    def extent_mpc(self) -> float:
        return self.n_xy * self.cell_mpc

    @property
    def nu_edges(self) -> np.ndarray:
        return np.linspace(self.nu_min_mhz, self.nu_max_mhz, self.n_los + 1)

    @property
    def frequencies_mhz(self) -> np.ndarray:
        e = self.nu_edges
        return 0.5 * (e[1:] + e[:-1])

    @property
    def redshifts(self) -> np.ndarray:
        return NU21_MHZ / self.frequencies_mhz - 1.0

    def refine(self, xy: int, los: int) -> LightconeGrid:
        """A grid nested ``xy``× finer on the sky and ``los``× along the line of sight."""
        return LightconeGrid(self.n_xy * xy, self.cell_mpc / xy, self.n_los * los,
                             self.nu_min_mhz, self.nu_max_mhz, self.scale_mk)

    def to_manifest(self) -> dict[str, Any]:
        return {"kind": "lightcone-freq-linear", "n_xy": self.n_xy, "cell_mpc": self.cell_mpc,
                "n_los": self.n_los, "nu_min_mhz": self.nu_min_mhz,
                "nu_max_mhz": self.nu_max_mhz, "scale_mk": self.scale_mk, "clip": CLIP,
                "z_min": float(NU21_MHZ / self.nu_max_mhz - 1.0),
                "z_max": float(NU21_MHZ / self.nu_min_mhz - 1.0),
                "axes": ["channel", "x", "y", "los (increasing frequency)"]}

    @classmethod
    def from_manifest(cls, d: dict[str, Any]) -> LightconeGrid:
        if d.get("kind") != "lightcone-freq-linear":
            raise ValueError(f"unsupported lightcone grid kind {d.get('kind')!r}")
        return cls(int(d["n_xy"]), float(d["cell_mpc"]), int(d["n_los"]),
                   float(d["nu_min_mhz"]), float(d["nu_max_mhz"]), float(d["scale_mk"]))


@dataclass(frozen=True)
class SkyPatches:
    """Which part of the cube's sky the model looked at: square patches of the model's field,
    at these offsets (Mpc, from the cube's first cell edge) along each sky axis."""

    sky_mpc: tuple[float, float]
    field_mpc: float
    offsets_mpc: tuple[tuple[float, ...], tuple[float, ...]]

    @property
    def count(self) -> int:
        return len(self.offsets_mpc[0]) * len(self.offsets_mpc[1])

    @property
    def covered_fraction(self) -> float:
        """Fraction of the cube's sky area inside at least one patch."""
        f = 1.0
        for sky, offs in zip(self.sky_mpc, self.offsets_mpc):
            f *= min(sky, len(offs) * self.field_mpc) / sky
        return f

    def to_json(self) -> dict[str, Any]:
        return {"patches": self.count, "patch_mpc": self.field_mpc,
                "sky_mpc": list(self.sky_mpc),
                "offsets_mpc": [list(o) for o in self.offsets_mpc],
                "covered_fraction": round(self.covered_fraction, 4)}


def patch_offsets(sky_mpc: float, field_mpc: float, max_per_axis: int) -> tuple[float, ...]:
    """Patch starts along one sky axis: as few patches as cover ``sky_mpc`` (capped), evenly
    spread from the first edge to the last so that neither end of the sky is favoured."""
    n = min(max_per_axis, max(1, math.ceil(sky_mpc / field_mpc - COVER_TOL)))
    if n == 1:
        return (0.0,)
    return tuple(float(o) for o in np.linspace(0.0, sky_mpc - field_mpc, n))


@dataclass(frozen=True)
class Prepared:
    x: np.ndarray  # float32 grid.shape
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedPatches:
    x: np.ndarray  # float32 (patches, *grid.shape): one model input per sky patch
    sky: SkyPatches
    notes: list[str] = field(default_factory=list)


def overlap_matrix(in_edges: np.ndarray, out_edges: np.ndarray) -> np.ndarray:
    """W (n_out, n_in): W[j, i] = |bin_in i ∩ bin_out j| / |bin_out j|; edges ascending.

    Rows sum to 1 where the input covers the output bin (checked by the caller)."""
    lo = np.maximum(out_edges[:-1, None], in_edges[None, :-1])
    hi = np.minimum(out_edges[1:, None], in_edges[None, 1:])
    w = np.clip(hi - lo, 0.0, None)
    return w / np.diff(out_edges)[:, None]


def centres_to_edges(c: np.ndarray) -> np.ndarray:
    """Bin edges from ascending bin centres (midpoints; ends mirrored)."""
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _resample_los(cube: np.ndarray, nu: np.ndarray, grid: LightconeGrid, source: str | None
                  ) -> np.ndarray:
    if nu[0] > nu[-1]:  # 21cmFAST stores increasing redshift = decreasing frequency
        cube, nu = cube[:, :, ::-1], nu[::-1]
    e_in, e_out = centres_to_edges(nu), grid.nu_edges
    span = e_out[-1] - e_out[0]
    if e_in[0] > e_out[0] + COVER_TOL * span or e_in[-1] < e_out[-1] - COVER_TOL * span:
        raise LightconeError(
            "no_grid_overlap", f"cube covers {e_in[0]:.2f}–{e_in[-1]:.2f} MHz "
            f"(z {NU21_MHZ / e_in[-1] - 1:.2f}–{NU21_MHZ / e_in[0] - 1:.2f}); the model needs "
            f"{e_out[0]:.2f}–{e_out[-1]:.2f} MHz", source=source)
    w = overlap_matrix(e_in, e_out)
    used = np.flatnonzero(w.any(axis=0))
    a, b = int(used[0]), int(used[-1]) + 1  # banded: only touch the slices that matter
    return np.ascontiguousarray(cube[:, :, a:b]) @ w[:, a:b].T.astype(np.float32)


def _resample_sky(cube: np.ndarray, cell: float, grid: LightconeGrid, source: str | None,
                  max_per_axis: int) -> tuple[np.ndarray, SkyPatches]:
    """(patches, n_xy, n_xy, n_los): each patch of the field averaged onto the model cells."""
    sky = (cube.shape[0] * cell, cube.shape[1] * cell)
    if min(sky) < grid.extent_mpc * (1 - COVER_TOL):
        raise LightconeError(
            "no_grid_overlap", f"cube is {cube.shape[0]}×{cube.shape[1]} cells of {cell:g} Mpc; "
            f"the model needs {grid.extent_mpc:g} Mpc on each sky axis", source=source)
    patches = SkyPatches(sky, grid.extent_mpc,
                         tuple(patch_offsets(s, grid.extent_mpc, max_per_axis) for s in sky))
    w_axes = []
    for n_in, offsets in zip(cube.shape[:2], patches.offsets_mpc):
        e_in = np.arange(n_in + 1, dtype=np.float64) * cell
        cells = np.arange(grid.n_xy + 1, dtype=np.float64) * grid.cell_mpc
        w_axes.append([overlap_matrix(e_in, o + cells).astype(np.float32) for o in offsets])
    out = np.empty((patches.count, grid.n_xy, grid.n_xy, cube.shape[2]), dtype=np.float32)
    k = 0
    for wx in w_axes[0]:
        xs = np.flatnonzero(wx.any(axis=0))
        a, b = int(xs[0]), int(xs[-1]) + 1  # banded: only the rows this patch covers
        rows = np.einsum("ix,xyl->iyl", wx[:, a:b], cube[a:b], optimize=True)
        for wy in w_axes[1]:
            ys = np.flatnonzero(wy.any(axis=0))
            c, d = int(ys[0]), int(ys[-1]) + 1
            out[k] = np.einsum("jy,iyl->ijl", wy[:, c:d], rows[:, c:d], optimize=True)
            k += 1
    return out, patches


def on_grid(lc: Lightcone, grid: LightconeGrid) -> bool:
    return lc.shape == (grid.n_xy, grid.n_xy, grid.n_los)


def resample_patches(lc: Lightcone, grid: LightconeGrid, *, source: str | None = None,
                     max_per_axis: int = MAX_PATCHES_PER_AXIS
                     ) -> tuple[np.ndarray, SkyPatches, list[str]]:
    """The cube's sky patches on ``grid`` in mK (patches, n_xy, n_xy, n_los) float32, which
    patches they are, and notes on what was done.

    A cube without a line-of-sight axis or cell size is accepted only when its shape already
    equals the grid's (the client says "this is on your grid" by sending exactly that)."""
    notes: list[str] = []
    nu = lc.frequencies_mhz
    if nu is None or lc.cell_mpc is None:
        if on_grid(lc, grid):
            notes.append("no axes given: assumed to be on the model grid")
            whole = SkyPatches((grid.extent_mpc,) * 2, grid.extent_mpc, ((0.0,), (0.0,)))
            return lc.cube[None], whole, notes
        raise LightconeError(
            "missing_axis", f"cube {lc.shape} has no {'redshift axis' if nu is None else ''}"
            f"{' and no ' if nu is None and lc.cell_mpc is None else ''}"
            f"{'cell size' if lc.cell_mpc is None else ''}; send them, or a cube of exactly "
            f"{(grid.n_xy, grid.n_xy, grid.n_los)} on the model grid", source=source)
    cube = _resample_los(lc.cube, nu, grid, source)
    lo, hi = float(np.min(nu)), float(np.max(nu))
    if lo < grid.nu_min_mhz - COVER_TOL * hi or hi > grid.nu_max_mhz + COVER_TOL * hi:
        notes.append(f"line of sight: z {NU21_MHZ / hi - 1:.2f}–{NU21_MHZ / lo - 1:.2f} given, "
                     f"the model's z {NU21_MHZ / grid.nu_max_mhz - 1:.2f}–"
                     f"{NU21_MHZ / grid.nu_min_mhz - 1:.2f} used")
    cubes, patches = _resample_sky(cube, lc.cell_mpc, grid, source, max_per_axis)
    if not math.isclose(lc.cell_mpc, grid.cell_mpc):
        notes.append(f"sky cells {lc.cell_mpc:g} Mpc → {grid.cell_mpc:g} Mpc (overlap averaging)")
    sx, sy = patches.sky_mpc
    if patches.count > 1 or patches.covered_fraction < 1 - COVER_TOL:
        notes.append(f"sky {sx:g}×{sy:g} Mpc seen as {patches.count} patch"
                     f"{'es' if patches.count > 1 else ''} of the model's {grid.extent_mpc:g}×"
                     f"{grid.extent_mpc:g} Mpc field, covering "
                     f"{100 * patches.covered_fraction:.0f} % of it")
    return np.ascontiguousarray(cubes, dtype=np.float32), patches, notes


def resample(lc: Lightcone, grid: LightconeGrid, *, source: str | None = None
             ) -> tuple[np.ndarray, list[str]]:
    """One cube on ``grid`` in mK (n_xy, n_xy, n_los): the first sky patch. For a simulation
    box the size of the field (training) that is the whole box; for a wider sky the notes say
    how much of it was left out."""
    cubes, _, notes = resample_patches(lc, grid, source=source, max_per_axis=1)
    return cubes[0], notes


def setup_warnings(lc: Lightcone, grid: LightconeGrid, x: np.ndarray) -> list[str]:
    """What about this cube differs from what the model was trained on, in words a user can
    act on. Resampling averages; it never invents structure, so a cube coarser than the grid
    reaches the model smoother than any training cube did, and its estimates can be biased
    (heating and reionisation leave their mark at the smallest scales). ``x`` is the model input
    (any leading axes), to count brightness clipped at ±CLIP·scale_mk."""
    out = []
    if lc.cell_mpc is not None and lc.cell_mpc > grid.cell_mpc * (1 + 1e-3):
        out.append(f"the cube's sky cells ({lc.cell_mpc:g} Mpc) are coarser than the model's "
                   f"({grid.cell_mpc:g} Mpc): the model never saw a sky this smooth, so its "
                   "estimates may be biased")
    nu = lc.frequencies_mhz
    if nu is not None and len(nu) > 1:
        dnu = float(np.median(np.abs(np.diff(nu))))
        model_dnu = (grid.nu_max_mhz - grid.nu_min_mhz) / grid.n_los
        if dnu > model_dnu * (1 + 1e-3):
            out.append(f"the cube's channels ({dnu:.3g} MHz) are wider than the model's "
                       f"({model_dnu:.3g} MHz): line-of-sight structure the model was trained "
                       "with is averaged away; estimates may be biased")
    clipped = float(np.mean(np.abs(x) >= CLIP)) if x.size else 0.0
    if clipped > 1e-3:
        out.append(f"{100 * clipped:.2g} % of the voxels lie beyond ±{CLIP * grid.scale_mk:g} mK "
                   "and were clipped: brightness temperatures outside the training range (is "
                   "the cube in mK?)")
    return out


def check_version(version: str) -> str:
    if version not in PREPROCESS_VERSIONS:
        raise ValueError(f"unknown lightcone preprocess version {version!r}; this code runs "
                         f"{', '.join(PREPROCESS_VERSIONS)}")
    return version


def normalise(cube_mk: np.ndarray, grid: LightconeGrid, version: str = PREPROCESS_VERSION
              ) -> np.ndarray:
    """Grid cube(s) in mK (..., n_xy, n_xy, n_los) → model input with a channel axis in front
    of the sky axes; a batch (N, n_xy, n_xy, n_los) gives (N, 1, ...). Training calls this on
    noisy batches, the service on one cube: the same code either way."""
    check_version(version)
    x = np.array(cube_mk, dtype=np.float32)  # a copy: the caller's cube is left alone
    if version == "lightcone-2":
        x -= x.mean(axis=(-3, -2), keepdims=True)
    x *= np.float32(1.0 / grid.scale_mk)
    np.clip(x, -CLIP, CLIP, out=x)
    return x[..., None, :, :, :]


def preprocess_patches(lc: Lightcone, grid: LightconeGrid, *, source: str | None = None,
                       version: str = PREPROCESS_VERSION,
                       max_per_axis: int = MAX_PATCHES_PER_AXIS) -> PreparedPatches:
    """Lightcone → one model input (1, n_xy, n_xy, n_los) per sky patch, by the model's
    ``version``: each patch is exactly what :func:`preprocess` makes of a cube of that size."""
    check_version(version)
    cubes, patches, notes = resample_patches(lc, grid, source=source, max_per_axis=max_per_axis)
    if version == "lightcone-2":
        notes.append("each channel's sky mean removed (not measured by an interferometer)")
    return PreparedPatches(normalise(cubes, grid, version), patches, notes)


def preprocess(lc: Lightcone, grid: LightconeGrid, *, source: str | None = None,
               version: str = PREPROCESS_VERSION) -> Prepared:
    """Lightcone → model input (1, n_xy, n_xy, n_los) float32, by the model's ``version``: the
    first sky patch (see :func:`resample`)."""
    p = preprocess_patches(lc, grid, source=source, version=version, max_per_axis=1)
    return Prepared(p.x[0], p.notes)
