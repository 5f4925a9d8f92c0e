"""Figures for the saliency and introspection endpoints, matplotlib Agg without pyplot.

Every figure is built as a :class:`~matplotlib.figure.Figure` by a ``*_figure`` function and
encoded by :func:`png`: the service sends the bytes, a test inspects the Figure (labels,
colour bars, text positions) instead of pixels. No pyplot: no global figure registry to leak
from a worker thread, and no backend switch at import time.

The spectrum figure is meant for a slide: the spectrum as observed, in the file's flux unit,
with its ±1σ band from the inverse variance; the saliency |S| as a colour strip under it
(with its colour bar) and signed on a panel below; known lines marked at the predicted
redshift with labels that never cover each other; a title with class, probability, z and
what was explained. The lightcone figure shows a slice of the cube and of the map, the
estimate against its prior and the file's own value when it has one, the sky window the
model used and what the input scaling is.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, PowerNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from service.inference.saliency import SATURATED
from service.spectra import Spectrum

from .figure_labels import (
    assign_rows,
    flux_unit,
    lines_in_view,
    parameter_symbol,
    parameter_unit,
)

LINE_LABEL_GID = "line-label"  # gid of each drawn line label (tests find them by it)
TRUE_VALUE_GID = "true-value"  # gid of the file's own parameter value marker
LABEL_ROWS = 3  # rows of line labels above the spectrum before labels are dropped
SMOOTH_PX = 5  # the |S| strip is a running mean over this many pixels
ZOOM_HALF_WIDTH = 60.0  # Å: the zoom panel around the most salient wavelength
NU21_MHZ = 1420.405751768
HEADER_CHARS_PER_INCH = 14  # where a lightcone figure's 8.5 pt header lines wrap


def new_figure(**kw: Any) -> Figure:
    """A Figure on its own Agg canvas (no pyplot state)."""
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _edges(centres: np.ndarray) -> np.ndarray:
    """Pixel edges of a log-uniform grid from its centres (geometric midpoints)."""
    c = np.asarray(centres, dtype=np.float64)
    mid = np.sqrt(c[1:] * c[:-1])
    return np.concatenate([[c[0] ** 2 / mid[0]], mid, [c[-1] ** 2 / mid[-1]]])


def _smooth(y: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return y
    k = np.ones(width) / width
    return np.convolve(y, k, mode="same")


def sigma_from_ivar(ivar: np.ndarray) -> np.ndarray:
    """1σ per pixel; NaN where the inverse variance says nothing (≤ 0 or not finite)."""
    iv = np.asarray(ivar, dtype=np.float64)
    ok = np.isfinite(iv) & (iv > 0)
    return np.where(ok, 1.0 / np.sqrt(np.where(ok, iv, 1.0)), np.nan)


def explained_quantity(explained: dict[str, Any]) -> str:
    """The scalar the map is the derivative of: z, P(STAR:A), log P(QSO), logit P(...)."""
    what = explained.get("target", "?")
    if what == "redshift":
        return "z"
    prefix = {"log_probability": "log ", "logit": "logit "}.get(explained.get("scale", ""), "")
    return f"{prefix}P({what})"


def map_meaning(quantity: str, method: str, wrt: str) -> str:
    """What S is, per method, for the derivative of ``quantity`` with respect to ``wrt``."""
    return {"gradient": f"∂{quantity}/∂{wrt}",
            "smoothgrad": f"⟨∂{quantity}/∂{wrt}⟩ over noisy copies",
            "gradient_x_input": f"{wrt}·∂{quantity}/∂{wrt}",
            "integrated_gradients": f"integrated gradients of {quantity} along {wrt}",
            }.get(method, f"attribution of {quantity}")


def method_details(method: dict[str, Any]) -> str:
    m = method.get("name", "gradient")
    return m + {"smoothgrad": f", n={method.get('samples')}, σ={method.get('sigma')}",
                "integrated_gradients": f", m={method.get('steps')}, baseline "
                                        f"{method.get('baseline')}"}.get(m, "")


# ---- spectra -------------------------------------------------------------------------------
def spectrum_figure(spectrum: Spectrum, *, saliency: np.ndarray, grid_wavelength: np.ndarray,
                    prediction: dict[str, Any], explained: dict[str, Any],
                    method: dict[str, Any], model: str, version: int,
                    source: str | None = None) -> Figure:
    """The slide figure of one spectrum. ``saliency`` is the flux-channel map on the model
    grid (``grid_wavelength``); the spectrum is drawn as observed (its own wavelengths, its
    file's flux unit), masked pixels left out."""
    lam = np.asarray(spectrum.wavelength, dtype=np.float64)
    good = (np.isfinite(spectrum.flux) & np.isfinite(lam)
            & ~np.asarray(spectrum.mask, dtype=bool))
    f = np.where(good, np.asarray(spectrum.flux, dtype=np.float64), np.nan)
    err = np.where(good, sigma_from_ivar(spectrum.ivar), np.nan)
    grid = np.asarray(grid_wavelength, dtype=np.float64)
    x0, x1 = float(grid[0]), float(grid[-1])  # what the model sees
    z = float(prediction.get("z", 0.0))
    cls = prediction.get("class")
    # lines at the predicted z; a star's lines at rest (radial velocities are ≲ 10⁻³ in z and
    # the model's z for stars is a nuisance output), and never blueshifted past z = 0
    z_lines = 0.0 if cls == "STAR" else max(z, 0.0)

    fig = new_figure(figsize=(13, 6.0))
    gs = fig.add_gridspec(4, 4, height_ratios=[0.42, 3.0, 0.38, 1.25],
                          width_ratios=[1.0, 0.012, 0.075, 0.25], hspace=0.05, wspace=0.015,
                          left=0.07, right=0.985, top=0.87, bottom=0.085)
    ax = fig.add_subplot(gs[1, 0])
    lab = fig.add_subplot(gs[0, 0], sharex=ax)
    band = fig.add_subplot(gs[2, 0], sharex=ax)
    axs = fig.add_subplot(gs[3, 0], sharex=ax)
    ax.set_xlim(x0, x1)

    unit = flux_unit(spectrum.meta)
    _draw_flux(ax, lam, f, err, x0, x1, unit)
    mesh = _draw_saliency(band, axs, grid, saliency)
    peak = float(grid[int(np.argmax(_smooth(np.abs(np.asarray(saliency, np.float64)),
                                            SMOOTH_PX)))])
    _draw_zoom(fig.add_subplot(gs[1, 3]), ax, lam, f, err, peak, ZOOM_HALF_WIDTH)
    quantity = explained_quantity(explained)
    meaning = map_meaning(quantity, method.get("name", "gradient"), "x")
    cb = fig.colorbar(mesh, cax=fig.add_subplot(gs[2:, 1]))
    cb.set_label(f"|S| / max|S|\n(strip; {SMOOTH_PX}-px mean)", fontsize=7)
    cb.ax.tick_params(labelsize=7)
    axs.set_ylabel("S / max|S|", fontsize=9)
    axs.set_xlabel("observed wavelength [Å, vacuum]")
    _draw_lines(fig, ax, lab, axs, lines_in_view(z_lines, x0, x1, cls))
    for a in (lab, ax, band):
        a.tick_params(labelbottom=False)

    title = (f"{cls}  P = {prediction.get('class_probability', float('nan')):.5g}   "
             f"({prediction.get('label')}: {prediction.get('label_probability', float('nan')):.3g})"
             f"   z = {z:.4f} ± {prediction.get('z_sigma', float('nan')):.4f}")
    fig.suptitle(title, fontsize=12, x=0.07, ha="left", y=0.985)
    why = ""
    value = float(explained.get("value", float("nan")))
    if explained.get("asked") == "auto" and explained.get("target") != cls:
        why = f"  (default: P({cls}) ≥ {SATURATED:g} is saturated; this is the open decision)"
    elif explained.get("scale") == "probability" and value >= SATURATED:
        why = "  (saturated: the gradient is ~0; try target=auto or scale=logit)"
    fig.text(0.07, 0.925, f"explained: {quantity} = {value:.6g}"
             f"{why}  ·  S = {meaning}, x = the normalised flux on the model grid "
             f"({method_details(method)})", fontsize=8, color="0.25")
    fig.text(0.07, 0.895, "  ·  ".join(p for p in (
        spectrum.object_id, f"file {source}" if source else "",
        f"lines at z = {z_lines:.4f}", f"{model} v{version}") if p),
        fontsize=8, color="0.25")
    return fig


def _draw_flux(ax, lam: np.ndarray, f: np.ndarray, err: np.ndarray, x0: float, x1: float,
               unit: str) -> None:
    """Spectrum + ±1σ band; y-limits from robust percentiles of the band in view, so spikes
    do not flatten it."""
    has_err = bool(np.isfinite(err).any())
    if has_err:
        ax.fill_between(lam, f - err, f + err, where=np.isfinite(err), color="#f28e2b",
                        alpha=0.85, lw=0, label="±1σ (from ivar)", zorder=1)
    ax.plot(lam, f, color="0.05", lw=0.35, label="flux", zorder=2)
    view = (lam >= x0) & (lam <= x1) & np.isfinite(f)
    lo_v = (f - np.nan_to_num(err))[view] if has_err else f[view]
    hi_v = (f + np.nan_to_num(err))[view] if has_err else f[view]
    if lo_v.size:
        lo, hi = float(np.percentile(lo_v, 0.5)), float(np.percentile(hi_v, 99.5))
    else:
        lo, hi = 0.0, 1.0
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(f"flux density $f_\\lambda$\n[{unit}]", fontsize=9)
    snr = np.nanmedian(np.abs(f[view]) / err[view]) if has_err and view.any() else np.nan
    ax.legend(loc="upper right", fontsize=7, frameon=False, ncol=2,
              title=f"median S/N {snr:.1f}" if np.isfinite(snr) else None,
              title_fontsize=7)


def _draw_zoom(zax, ax, lam: np.ndarray, f: np.ndarray, err: np.ndarray, centre: float,
               half: float) -> None:
    """The spectrum ±``half`` Å around the most salient wavelength, where the ±1σ band is
    wide enough to see even at high S/N; its window is shaded on the main panel."""
    lo, hi = centre - half, centre + half
    ax.axvspan(lo, hi, color="0.85", lw=0, zorder=0)
    w = (lam >= lo) & (lam <= hi) & np.isfinite(f)
    zax.fill_between(lam, f - err, f + err, where=np.isfinite(err), color="#f28e2b",
                     alpha=0.85, lw=0, zorder=1)
    zax.plot(lam, f, color="0.05", lw=0.7, zorder=2, drawstyle="steps-mid")
    zax.set_xlim(lo, hi)
    if w.any():
        e = np.nan_to_num(err[w])
        ylo, yhi = float(np.min(f[w] - e)), float(np.max(f[w] + e))
        pad = 0.06 * (yhi - ylo if yhi > ylo else 1.0)
        zax.set_ylim(ylo - pad, yhi + pad)
    zax.tick_params(labelsize=7)
    zax.set_title(f"zoom: ±{half:g} Å around max |S|\n(shaded on the left), ±1σ band",
                  fontsize=7.5)
    zax.set_xlabel("observed wavelength [Å]", fontsize=7)
    zax.set_ylabel("$f_\\lambda$ (as on the left)", fontsize=7)


def _draw_saliency(band, axs, grid: np.ndarray, saliency: np.ndarray):
    """|S| as a colour strip (square-root stretch, so secondary features stay visible beside
    the strongest one) and S signed below; both normalised to max|S|. The strip's mesh is
    returned for its colour bar."""
    signed = np.asarray(saliency, dtype=np.float64)
    peak = float(np.abs(signed).max()) or 1.0
    sm = _smooth(np.abs(signed) / peak, SMOOTH_PX)
    # pcolormesh on the pixel edges: the grid is uniform in log λ, not in λ
    mesh = band.pcolormesh(_edges(grid), [0.0, 1.0], sm[None, :], cmap="magma",
                           norm=PowerNorm(0.5, 0, max(float(np.percentile(sm, 99.5)), 1e-6)),
                           shading="flat", rasterized=True)
    band.set_yticks([])
    band.set_ylabel("|S|", rotation=0, ha="right", va="center", fontsize=9)
    axs.fill_between(grid, 0, signed / peak, where=signed >= 0, color="tab:red", lw=0,
                     alpha=0.8, label="raises it")
    axs.fill_between(grid, 0, signed / peak, where=signed < 0, color="tab:blue", lw=0,
                     alpha=0.8, label="lowers it")
    axs.axhline(0, color="0.5", lw=0.5)
    axs.set_ylim(-1.05, 1.05)
    axs.legend(loc="lower right", fontsize=7, ncol=2, frameon=False)
    return mesh


def _draw_lines(fig: Figure, ax, lab, axs, lines: Sequence[tuple[str, float, str]]) -> None:
    """Dashed markers at each line, labels in rows above the spectrum: each label in the
    lowest row where it covers no other, measured in pixels of the rendered figure; a label
    with no free row is left out (its marker stays)."""
    lab.set_ylim(0, LABEL_ROWS)
    lab.set_yticks([])
    lab.tick_params(bottom=False)
    for side in ("top", "right", "left", "bottom"):
        lab.spines[side].set_visible(False)
    renderer = fig.canvas.get_renderer()
    texts, centres, widths = [], [], []
    for name, lam_obs, kind in lines:
        color = {"em": "tab:green", "abs": "tab:purple"}.get(kind, "tab:olive")
        for a in (ax, axs):
            a.axvline(lam_obs, color=color, lw=0.7, ls="--", alpha=0.6, zorder=0)
        t = lab.text(lam_obs, 0.5, name, ha="center", va="center", fontsize=7, color=color,
                     gid=LINE_LABEL_GID)
        bb = t.get_window_extent(renderer)
        texts.append(t)
        centres.append(0.5 * (bb.x0 + bb.x1))
        widths.append(bb.width)
    for t, row in zip(texts, assign_rows(centres, widths, LABEL_ROWS)):
        if row is None:
            t.remove()
        else:
            t.set_y(row + 0.5)


# ---- introspection -------------------------------------------------------------------------
def filters_figure(filters: np.ndarray, model: str, version: int) -> bytes:
    """First-layer filters (members, channels, 2 inputs, k) as a grid: one panel per filter,
    the flux-input taps solid, the weight-input taps dashed."""
    m, c, _, k = filters.shape
    cols = min(c, 8)
    rows = m * int(np.ceil(c / cols))
    fig = new_figure(figsize=(1.4 * cols, 1.1 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    lim = float(np.abs(filters).max() or 1.0)
    for mi in range(m):
        for ci in range(c):
            r, col = mi * int(np.ceil(c / cols)) + ci // cols, ci % cols
            a = axes[r][col]
            a.axhline(0, color="0.7", lw=0.5)
            a.plot(filters[mi, ci, 0], color="tab:blue", lw=1.2)
            a.plot(filters[mi, ci, 1], color="tab:orange", lw=1.0, ls="--")
            a.set_ylim(-lim, lim)
            a.set_xticks([])
            a.set_yticks([])
            if col == 0:
                a.set_ylabel(f"m{mi}", fontsize=7)
    for r in range(rows):
        for col in range(cols):
            if not axes[r][col].lines:
                axes[r][col].axis("off")
    fig.suptitle(f"{model} v{version}: first-layer filters ({k} taps; flux solid, weight "
                 f"dashed), per ensemble member", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return png(fig)


def activations_figure(acts: np.ndarray, layer: str, grid_wavelength: np.ndarray,
                       model: str, version: int) -> bytes:
    """One layer's activations (members, channels, length) as heat maps over wavelength."""
    m = acts.shape[0]
    fig = new_figure(figsize=(10, 1.2 + 1.4 * m))
    axes = fig.subplots(m, 1, squeeze=False, sharex=True)
    for i in range(m):
        a = axes[i][0]
        # layer position j covers grid pixels [j·s, (j+1)·s): edges in log λ, not λ
        n = acts.shape[2]
        edges = np.interp(np.linspace(0, len(grid_wavelength), n + 1),
                          np.arange(len(grid_wavelength) + 1), _edges(grid_wavelength))
        im = a.pcolormesh(edges, np.arange(acts.shape[1] + 1) - 0.5, acts[i], cmap="viridis",
                          shading="flat", rasterized=True)
        a.invert_yaxis()
        a.set_ylabel(f"member {i}\nchannel", fontsize=8)
        fig.colorbar(im, ax=a, pad=0.01)
    axes[-1][0].set_xlabel("observed wavelength [Å] (layer positions mapped onto the grid)")
    fig.suptitle(f"{model} v{version}: activations of {layer}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return png(fig)


# ---- lightcones ---------------------------------------------------------------------------
EOR_CMAP = LinearSegmentedColormap.from_list(
    # the usual 21cm brightness colours: absorption blue, zero black, emission orange
    "eor", [(0.0, "#bdf3ff"), (0.3, "#1d49c9"), (0.5, "black"), (0.75, "#d2471e"),
            (1.0, "#ffe27a")])


def _nice_redshifts(z_lo: float, z_hi: float) -> list[float]:
    ticks = [6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 25, 30, 40]
    return [float(z) for z in ticks if z_lo <= z <= z_hi]


def lightcone_saliency_figure(**kw: Any) -> bytes:
    """PNG of :func:`lightcone_figure` (the router's entry point)."""
    return png(lightcone_figure(**kw))


def lightcone_figure(*, cube_mk: np.ndarray, saliency: np.ndarray,
                     frequencies_mhz: np.ndarray, cell_mpc: float,
                     explained: dict[str, Any], estimate: dict[str, Any],
                     method: dict[str, Any], model: str, version: int,
                     slice_axis: str = "x", slice_index: int | None = None,
                     los_index: int | None = None, source: str | None = None,
                     true_value: float | None = None, notes: Sequence[str] = (),
                     scale_mk: float | None = None) -> Figure:
    """The slide figure of a lightcone: a sky-axis × line-of-sight slice of the cube (the
    classic lightcone plot) above the same slice of the saliency map, the line of sight
    labelled in redshift (bottom) and frequency (top), the whole cube's saliency per channel
    under them; with ``los_index``, the sky plane at that channel on the right. Above: the
    estimate on its prior, with the file's own value (``true_value``) when it has one.

    ``cube_mk`` and ``saliency`` are (X, Y, L) on the model grid (L in increasing frequency);
    ``notes`` are the preprocessing's (what was resampled); ``scale_mk`` is the input scaling
    x = T_b / scale_mk the gradient is taken against."""
    nx = cube_mk.shape[0]
    ax_i = 0 if slice_axis == "x" else 1
    n_ax = cube_mk.shape[ax_i]
    idx = n_ax // 2 if slice_index is None else int(slice_index)
    cut = (lambda a: a[idx]) if ax_i == 0 else (lambda a: a[:, idx])
    c_sl, s_sl = cut(cube_mk), cut(saliency)  # (other sky axis, L)
    nu = np.asarray(frequencies_mhz, dtype=np.float64)
    dnu = float(nu[1] - nu[0]) if len(nu) > 1 else 1.0
    nu_edges = np.concatenate([[nu[0] - dnu / 2], nu + dnu / 2])
    sky_edges = np.arange(c_sl.shape[0] + 1) * cell_mpc
    extent = nx * cell_mpc

    lim_c = float(np.percentile(np.abs(cube_mk), 99.5)) or 1.0
    cnorm = TwoSlopeNorm(0.0, -max(lim_c, 1e-3), max(lim_c, 1e-3))
    lim_s = float(np.percentile(np.abs(saliency), 99.9)) or 1.0
    snorm = TwoSlopeNorm(0.0, -lim_s, lim_s)  # symmetric: white is "no influence"

    side = los_index is not None
    fig = new_figure(figsize=(13 if side else 11, 7.2))
    # columns: LOS panels, their colour bars, a gap, (the sky-plane panels)
    widths = [4.6, 0.07, 0.42, 1.25] if side else [4.6, 0.07]
    gs = fig.add_gridspec(3, len(widths), height_ratios=[1, 1, 0.55], width_ratios=widths,
                          hspace=0.12, wspace=0.03, left=0.065, right=0.985 if side else 0.9,
                          top=0.74, bottom=0.08)
    ax_c = fig.add_subplot(gs[0, 0])
    ax_s = fig.add_subplot(gs[1, 0], sharex=ax_c)
    ax_p = fig.add_subplot(gs[2, 0], sharex=ax_c)
    other = "y" if ax_i == 0 else "x"
    im_c = ax_c.pcolormesh(nu_edges, sky_edges, c_sl, cmap=EOR_CMAP,
                           norm=cnorm, shading="flat", rasterized=True)
    im_s = ax_s.pcolormesh(nu_edges, sky_edges, s_sl, cmap="RdBu_r", norm=snorm,
                           shading="flat", rasterized=True)
    for a, label in ((ax_c, "cube"), (ax_s, "saliency")):
        a.set_ylabel(f"{other} [Mpc]")
        a.text(0.005, 0.93, label, transform=a.transAxes, fontsize=8, color="0.1", va="top",
               bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1.5})
    name = explained.get("parameter", "?")
    sym = parameter_symbol(name)
    unit = parameter_unit(name, explained.get("unit") or "")
    x_is = (f"x = T_b / {scale_mk:g} mK" if scale_mk else "x = T_b / scale")
    cb = fig.colorbar(im_c, cax=fig.add_subplot(gs[0, 1]))
    cb.set_label("T_b [mK], as preprocessed", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    cb = fig.colorbar(im_s, cax=fig.add_subplot(gs[1, 1]))
    kind = method.get("name", "gradient")
    target = f"σ({sym})" if explained.get("output") == "sigma" else sym
    cb.set_label((map_meaning(target, kind, "x") if kind in ("gradient", "smoothgrad")
                  else f"attribution to {target}") + f"\n({x_is})", fontsize=8)
    cb.ax.tick_params(labelsize=7)

    # the whole cube's influence per channel: where along the line of sight it looked
    prof_abs = np.abs(saliency).sum(axis=(0, 1))
    prof = saliency.sum(axis=(0, 1))
    ax_p.fill_between(nu, 0, prof_abs, step="mid", color="0.75", lw=0, label="Σ|S| (sky)")
    ax_p.step(nu, prof, where="mid", color="tab:red", lw=0.9, label="Σ S (sky)")
    ax_p.axhline(0, color="0.5", lw=0.5)
    ax_p.set_ylabel("per channel", fontsize=8)
    ax_p.legend(loc="upper left", fontsize=7, frameon=False, ncol=2)

    # line of sight: redshift on the bottom axis, frequency on top of the cube panel
    z_of = NU21_MHZ / nu - 1.0
    zt = _nice_redshifts(float(z_of.min()), float(z_of.max()))
    ax_p.set_xticks([NU21_MHZ / (1 + z) for z in zt])
    ax_p.set_xticklabels([f"{z:g}" for z in zt])
    ax_p.set_xlabel("redshift z  (line of sight; frequency increases to the right)")
    ax_p.set_xlim(nu_edges[0], nu_edges[-1])
    for a in (ax_c, ax_s):
        a.tick_params(labelbottom=False)
    top = ax_c.secondary_xaxis("top")
    top.set_xlabel("frequency [MHz]", fontsize=8)
    top.tick_params(labelsize=8)
    if side:
        nu0 = nu[int(los_index)]
        for a in (ax_c, ax_s, ax_p):
            a.axvline(nu0, color="0.4", lw=0.8, ls="--")
        sky = np.arange(nx + 1) * cell_mpc
        ax_c2 = fig.add_subplot(gs[0, 3])
        ax_s2 = fig.add_subplot(gs[1, 3])
        ax_c2.pcolormesh(sky, sky, cube_mk[:, :, los_index].T, cmap=EOR_CMAP, norm=cnorm,
                         shading="flat", rasterized=True)
        ax_s2.pcolormesh(sky, sky, saliency[:, :, los_index].T, cmap="RdBu_r", norm=snorm,
                         shading="flat", rasterized=True)
        for a in (ax_c2, ax_s2):
            a.set_aspect("equal")
            a.set_ylabel("y [Mpc]", fontsize=8)
            a.tick_params(labelsize=7)
            pos = (idx + 0.5) * cell_mpc
            (a.axvline if ax_i == 0 else a.axhline)(pos, color="0.4", lw=0.8, ls="--")
        ax_c2.set_title(f"sky at z = {z_of[int(los_index)]:.2f} ({nu0:.1f} MHz)", fontsize=8)
        ax_s2.text(0.02, 0.97, "saliency", transform=ax_s2.transAxes, fontsize=7, va="top",
                   bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1.5})
        ax_s2.set_xlabel("x [Mpc]", fontsize=8)

    _draw_estimate(fig, sym, estimate, true_value)
    what = "σ of " if explained.get("output") == "sigma" else ""
    mean, sig = estimate.get("mean", float("nan")), estimate.get("sigma", float("nan"))
    title = f"{sym} = {mean:.4g} ± {sig:.3g}" + (f" {unit}" if unit else "")
    if true_value is not None:
        title += f"     true (file) = {true_value:.4g}"
    fig.suptitle(title, fontsize=13, x=0.065, ha="left", y=0.975)
    fig.text(0.065, 0.905, "  ·  ".join(p for p in (
        f"file {source}" if source else "",
        (f"saliency of {what}{sym} = {explained.get('value', float('nan')):.4g}"
         f" ({method_details(method)})"),
        f"slice {slice_axis} = {idx} ({(idx + 0.5) * cell_mpc:g} Mpc)",
        f"{model} v{version}") if p), fontsize=8.5, color="0.25")
    lines = [f"sky used: {extent:g} × {extent:g} Mpc ({nx} × {nx} cells of {cell_mpc:g} Mpc, "
             "from the input's corner)  ·  preprocessing: "
             + ("; ".join(notes) if notes else "the input was already on the model grid")]
    if scale_mk:
        lines.append(f"scale: the model reads x = T_b / {scale_mk:g} mK (a fixed input "
                     "scaling, no per-cube normalisation), so S is per unit x: per "
                     f"{scale_mk:g} mK of T_b in one voxel")
    width = int(HEADER_CHARS_PER_INCH * fig.get_figwidth())
    fig.text(0.065, 0.875, "\n".join(textwrap.fill(t, width) for t in lines),
             fontsize=8.5, color="0.25", va="top", linespacing=1.5)
    return fig


def _draw_estimate(fig: Figure, sym: str, estimate: dict[str, Any],
                   true_value: float | None) -> None:
    """The estimate ± σ on its prior range (top right), and the file's value as a marker."""
    prior = estimate.get("prior")
    mean, sig = estimate.get("mean", float("nan")), estimate.get("sigma", float("nan"))
    ax = fig.add_axes((0.72, 0.93, 0.25, 0.035))
    lo, hi = (prior if prior else (mean - 3 * sig, mean + 3 * sig))
    ax.set_xlim(lo, hi)
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    ax.tick_params(labelsize=7)
    ax.errorbar([mean], [0], xerr=[sig], fmt="o", color="tab:blue", ms=4, capsize=2,
                label="estimate ± 1σ")
    if true_value is not None:
        ax.plot([true_value], [0], marker="v", color="tab:red", ms=8, ls="none",
                label="true value (file)", gid=TRUE_VALUE_GID, clip_on=False)
    ax.text(-0.02, 0.5, sym + (" on its prior" if prior else ""),
            transform=ax.transAxes, ha="right", va="center", fontsize=7)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=7, frameon=False, ncol=2,
              borderaxespad=0.1, handletextpad=0.3)
