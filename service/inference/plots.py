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
