"""Figures for the saliency and introspection endpoints (PNG bytes), matplotlib Agg.

matplotlib is imported inside each function: the classifier path never pays for it, and a
service built without matplotlib still serves every JSON answer.

The saliency figure is meant for a slide: the spectrum on the observed wavelength axis with
its 1σ error band, the saliency |S| of the flux channel as a colour band under it (same
axis) and as a line on a twin panel, known lines marked where they fall at the predicted
redshift, and a title with class, probability, z and what was explained.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

# Vacuum rest wavelengths (Å). Emission lines from the SDSS pipeline's emlines.par (air → vacuum
# above 2000 Å, Morton 1991), absorption lines from the same conversion of their air values.
# (label, λ_vac, kind): kind "em" (emission), "abs" (absorption) or "balmer" (either).
LINES: list[tuple[str, float, str]] = [
    ("Lyα", 1215.67, "em"), ("N V", 1240.81, "em"), ("C IV", 1549.48, "em"),
    ("He II", 1640.42, "em"), ("C III]", 1908.73, "em"), ("Mg II", 2800.32, "em"),
    ("[O II]", 3728.48, "em"), ("[Ne III]", 3869.86, "em"), ("Hδ", 4102.89, "balmer"),
    ("Hγ", 4341.68, "balmer"), ("Hβ", 4862.68, "balmer"), ("[O III]", 5008.24, "em"),
    ("He I", 5877.31, "em"), ("Hα", 6564.61, "balmer"), ("[N II]", 6585.27, "em"),
    ("[S II]", 6725.48, "em"),
    ("K", 3934.77, "abs"), ("H", 3969.59, "abs"), ("G band", 4305.61, "abs"),
    ("Mg b", 5176.7, "abs"), ("Na D", 5894.57, "abs"),
]
# which lines a class is expected to show; stars get the absorption set at z = 0
CLASS_LINES = {"QSO": {"em", "balmer"}, "GALAXY": {"em", "abs", "balmer"},
               "STAR": {"abs", "balmer"}}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return buf.getvalue()


def lines_in_view(z: float, lam_min: float, lam_max: float, cls: str | None = None
                  ) -> list[tuple[str, float, str]]:
    kinds = CLASS_LINES.get(cls or "", {"em", "abs", "balmer"})
    return [(n, lam * (1 + z), k) for n, lam, k in LINES
            if k in kinds and lam_min <= lam * (1 + z) <= lam_max]


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


def saliency_figure(*, wavelength: np.ndarray, flux: np.ndarray, sigma: np.ndarray | None,
                    grid_wavelength: np.ndarray, saliency: np.ndarray,
                    prediction: dict[str, Any], explained: dict[str, Any],
                    method: dict[str, Any], model: str, version: int,
                    object_id: str | None = None, mask: np.ndarray | None = None) -> bytes:
    """The slide figure. ``saliency`` is the flux-channel map on the model grid
    (``grid_wavelength``); the spectrum is drawn as observed (its own wavelengths)."""
    plt = _plt()
    from matplotlib.colors import PowerNorm

    good = np.isfinite(flux) & np.isfinite(wavelength)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    lam, f = wavelength[good], flux[good]
    err = sigma[good] if sigma is not None else None
    z = float(prediction.get("z", 0.0))
    cls = prediction.get("class")
    # lines at the predicted z; a star's lines at rest (radial velocities are ≲ 10⁻³ in z and
    # the model's z for stars is a nuisance output), and never blueshifted past z = 0
    z_lines = 0.0 if cls == "STAR" else max(z, 0.0)

    fig = plt.figure(figsize=(11, 5.2))
    gs = fig.add_gridspec(3, 1, height_ratios=[3.2, 0.35, 1.3], hspace=0.06)
    ax = fig.add_subplot(gs[0])
    band = fig.add_subplot(gs[1], sharex=ax)
    axs = fig.add_subplot(gs[2], sharex=ax)

    # spectrum + 1σ band; y-limits from robust percentiles so spikes do not flatten it
    ax.plot(lam, f, color="0.15", lw=0.6)
    if err is not None and np.isfinite(err).any():
        ax.fill_between(lam, f - err, f + err, color="tab:blue", alpha=0.3, lw=0)
    in_view = (lam >= grid_wavelength[0]) & (lam <= grid_wavelength[-1])
    fv = f[in_view] if in_view.any() else f
    lo, hi = np.nanpercentile(fv, [0.5, 99.5]) if fv.size else (0, 1)
    pad = 0.15 * (hi - lo if hi > lo else 1.0)
    ax.set_ylim(lo - pad, hi + 2.2 * pad)
    ax.set_ylabel("flux  (band: ±1σ)")

    # saliency: |S| of the flux channel, smoothed over ~5 pixels, on a square-root colour
    # scale for the band (secondary features stay visible beside the strongest one)
    s = np.abs(np.asarray(saliency, dtype=np.float64))
    s_norm = s / (s.max() if s.max() > 0 else 1.0)
    sm = _smooth(s_norm, 5)
    # pcolormesh on the pixel edges: the grid is uniform in log λ, not in λ
    band.pcolormesh(_edges(grid_wavelength), [0.0, 1.0], sm[None, :], cmap="magma",
                    norm=PowerNorm(0.5, 0, max(float(np.percentile(sm, 99.5)), 1e-6)),
                    shading="flat", rasterized=True)
    band.set_yticks([])
    band.set_ylabel("|S|", rotation=0, ha="right", va="center")
    signed = np.asarray(saliency, dtype=np.float64)
    scale = np.abs(signed).max() or 1.0
    axs.fill_between(grid_wavelength, 0, signed / scale, where=signed >= 0, color="tab:red",
                     lw=0, alpha=0.8, label="raises it")
    axs.fill_between(grid_wavelength, 0, signed / scale, where=signed < 0, color="tab:blue",
                     lw=0, alpha=0.8, label="lowers it")
    axs.axhline(0, color="0.5", lw=0.5)
    axs.set_ylim(-1.05, 1.05)
    axs.set_ylabel("S / max|S|")
    axs.set_xlabel("observed wavelength [Å, vacuum]")
    axs.legend(loc="lower right", fontsize=7, ncol=2, frameon=False)

    # lines at the predicted redshift
    x0, x1 = float(grid_wavelength[0]), float(grid_wavelength[-1])  # what the model sees
    ax.set_xlim(x0, x1)
    ytop = ax.get_ylim()[1]
    last_x = -np.inf
    for name, lam_obs, kind in sorted(lines_in_view(z_lines, x0, x1, cls), key=lambda t: t[1]):
        color = {"em": "tab:green", "abs": "tab:purple"}.get(kind, "tab:olive")
        for a in (ax, axs):
            a.axvline(lam_obs, color=color, lw=0.7, ls="--", alpha=0.6)
        stagger = (lam_obs - last_x) < 0.018 * (x1 - x0)
        ax.text(lam_obs, ytop - (0.12 if stagger else 0.03) * (ytop - ax.get_ylim()[0]), name,
                rotation=90, ha="right", va="top", fontsize=7, color=color)
        last_x = lam_obs
    plt.setp(ax.get_xticklabels(), visible=False)
    plt.setp(band.get_xticklabels(), visible=False)

    what = explained.get("target", "?")
    scale = explained.get("scale", "")
    val = explained.get("value", float("nan"))
    kind = "z" if what == "redshift" else f"P({what})"
    m = method.get("name", "gradient")
    extra = {"smoothgrad": f", n={method.get('samples')}, σ={method.get('sigma')}",
             "integrated_gradients": f", m={method.get('steps')}, baseline "
                                     f"{method.get('baseline')}"}.get(m, "")
    title = (f"{cls}  p={prediction.get('class_probability', float('nan')):.3f}"
             f"   ({prediction.get('label')})   z = {z:.4f} ± "
             f"{prediction.get('z_sigma', float('nan')):.4f}")
    fig.suptitle(title, fontsize=12, x=0.07, ha="left", y=0.985)
    fig.text(0.07, 0.915, f"{object_id or ''}  ·  saliency of {kind} = {val:.3g}"
             f" ({scale}; {m}{extra})  ·  lines at z = {z_lines:.4f}  ·  {model} v{version}",
             fontsize=8, color="0.3")
    fig.subplots_adjust(left=0.07, right=0.985, top=0.89, bottom=0.1)
    return _png(fig)


def filters_figure(filters: np.ndarray, model: str, version: int) -> bytes:
    """First-layer filters (members, channels, 2 inputs, k) as a grid: one panel per filter,
    the flux-input taps solid, the weight-input taps dashed."""
    plt = _plt()
    m, c, _, k = filters.shape
    cols = min(c, 8)
    rows = m * int(np.ceil(c / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.1 * rows), squeeze=False,
                             sharex=True)
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
    return _png(fig)


def activations_figure(acts: np.ndarray, layer: str, grid_wavelength: np.ndarray,
                       model: str, version: int) -> bytes:
    """One layer's activations (members, channels, length) as heat maps over wavelength."""
    plt = _plt()
    m = acts.shape[0]
    fig, axes = plt.subplots(m, 1, figsize=(10, 1.2 + 1.4 * m), squeeze=False, sharex=True)
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
    return _png(fig)


# ---- lightcones ---------------------------------------------------------------------------
def _eor_cmap():
    """The usual 21cm brightness colours: absorption blue, zero black, emission orange."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(
        "eor", [(0.0, "#bdf3ff"), (0.3, "#1d49c9"), (0.5, "black"), (0.75, "#d2471e"),
                (1.0, "#ffe27a")])


def _png_of(fig) -> bytes:
    """PNG of a pyplot-free Figure (Agg canvas, no global state to clean up)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _nice_redshifts(z_lo: float, z_hi: float) -> list[float]:
    ticks = [6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 25, 30, 40]
    return [float(z) for z in ticks if z_lo <= z <= z_hi]


def lightcone_saliency_figure(*, cube_mk: np.ndarray, saliency: np.ndarray,
                              frequencies_mhz: np.ndarray, cell_mpc: float,
                              explained: dict[str, Any], estimate: dict[str, Any],
                              method: dict[str, Any], model: str, version: int,
                              slice_axis: str = "x", slice_index: int | None = None,
                              los_index: int | None = None, source: str | None = None
                              ) -> bytes:
    """The slide figure of a lightcone: a sky-axis × line-of-sight slice of the cube (the
    classic lightcone plot) above the same slice of the saliency map, the line of sight
    labelled in redshift (bottom) and frequency (top), the whole cube's saliency per channel
    under them; with ``los_index``, the sky plane at that channel on the right.

    ``cube_mk`` and ``saliency`` are (X, Y, L) on the model grid (L in increasing frequency)."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

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

    lim_c = float(np.percentile(np.abs(cube_mk), 99.5)) or 1.0
    cnorm = TwoSlopeNorm(0.0, -max(lim_c, 1e-3), max(lim_c, 1e-3))
    lim_s = float(np.percentile(np.abs(saliency), 99.9)) or 1.0
    snorm = TwoSlopeNorm(0.0, -lim_s, lim_s)  # symmetric: white is "no influence"

    side = los_index is not None
    fig = Figure(figsize=(13 if side else 11, 6.6))
    # columns: LOS panels, their colour bars, a gap, (the sky-plane panels)
    widths = [4.6, 0.07, 0.42, 1.25] if side else [4.6, 0.07]
    gs = fig.add_gridspec(3, len(widths), height_ratios=[1, 1, 0.55], width_ratios=widths,
                          hspace=0.12, wspace=0.03, left=0.065, right=0.985 if side else 0.93,
                          top=0.85, bottom=0.09)
    ax_c = fig.add_subplot(gs[0, 0])
    ax_s = fig.add_subplot(gs[1, 0], sharex=ax_c)
    ax_p = fig.add_subplot(gs[2, 0], sharex=ax_c)
    other = "y" if ax_i == 0 else "x"
    im_c = ax_c.pcolormesh(nu_edges, sky_edges, c_sl, cmap=_eor_cmap(),
                           norm=cnorm, shading="flat", rasterized=True)
    im_s = ax_s.pcolormesh(nu_edges, sky_edges, s_sl, cmap="RdBu_r", norm=snorm,
                           shading="flat", rasterized=True)
    for a, label in ((ax_c, "cube"), (ax_s, "saliency")):
        a.set_ylabel(f"{other} [Mpc]")
        a.text(0.005, 0.93, label, transform=a.transAxes, fontsize=8, color="0.1", va="top",
               bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1.5})
    cb = fig.colorbar(im_c, cax=fig.add_subplot(gs[0, 1]))
    cb.set_label("T_b [mK], as preprocessed", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    unit = explained.get("unit") or ""
    cb = fig.colorbar(im_s, cax=fig.add_subplot(gs[1, 1]))
    kind = method.get("name", "gradient")
    cb.set_label(("∂θ/∂x  (x = T_b / scale)" if kind in ("gradient", "smoothgrad")
                  else "attribution") + (f" [{unit}]" if unit else ""), fontsize=8)
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
    z_of = 1420.405751768 / nu - 1.0
    zt = _nice_redshifts(float(z_of.min()), float(z_of.max()))
    ax_p.set_xticks([1420.405751768 / (1 + z) for z in zt])
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
        ax_c2.pcolormesh(sky, sky, cube_mk[:, :, los_index].T, cmap=_eor_cmap(), norm=cnorm,
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

    est = estimate
    name = explained.get("parameter", "?")
    what = "σ of " if explained.get("output") == "sigma" else ""
    prior = est.get("prior")
    title = (f"{name} = {est.get('mean', float('nan')):.4g} ± {est.get('sigma', float('nan')):.3g}"
             f"{(' ' + unit) if unit else ''}" + (f"   (prior [{prior[0]:g}, {prior[1]:g}])"
                                                   if prior else ""))
    extra = {"smoothgrad": f", n={method.get('samples')}, σ={method.get('sigma')}",
             "integrated_gradients": f", m={method.get('steps')}, baseline "
                                     f"{method.get('baseline')}"}.get(kind, "")
    fig.suptitle(title, fontsize=13, x=0.07, ha="left", y=0.975)
    fig.text(0.07, 0.915, f"saliency of {what}{name} = {explained.get('value', float('nan')):.4g}"
             f" ({kind}{extra})  ·  slice {slice_axis} = {idx} ({(idx + 0.5) * cell_mpc:g} Mpc)"
             f"  ·  {model} v{version}" + (f"  ·  {source}" if source else ""),
             fontsize=8.5, color="0.3")
    return _png_of(fig)
