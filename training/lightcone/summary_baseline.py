"""A summary-statistic baseline for the lightcone regressor: power spectra per redshift chunk
into a small MLP (issue 20).

Why: the 3D CNN (model.py) reads the parameters from the whole lightcone. The standard 21cm
answer is a power spectrum per redshift range plus a regressor. If such a baseline matches the
CNN, the CNN has learned little beyond the power spectrum; where the CNN is better, it uses
non-Gaussian information (bubble shapes, the light-cone evolution inside a chunk); where the
baseline is better, the CNN is under-trained. Same data, same splits, same σ calibration, same
metrics (:func:`training.lightcone.evaluate.metrics`), so the numbers sit beside the CNN's
report.md.

Features (:func:`features`): each model-grid cube (mK, the service's resampling of the dataset
grid, as the CNN sees it before scaling) is cut along the line of sight into ``n_chunks``
contiguous chunks of channels (each a redshift range). Per chunk, each channel's sky mean is
subtracted (an interferometer measures no k⊥ = 0 mode; the same as the CNN's lightcone-2
preprocessing; it also removes the chunk mean), and the spherically averaged dimensionless
power spectrum Δ²(k) = k³ P(k) / (2π²) is taken in ``n_k`` logarithmic |k| bins:
  - P(k) = |Σ_x T(x) e^{-ik·x} ΔV|² / V (numpy FFT), T in mK, cells in comoving Mpc, so P is
    in mK² Mpc³, k in Mpc⁻¹ (no h) and Δ² in mK²;
  - the sky cells are ``grid.cell_mpc``; a channel's depth is its comoving width at a fiducial
    Ω_m (``BaselineConfig.fiducial_omm``, astropy Planck18 as noise.comoving_edges) — an
    observer's fixed choice, since the true Ω_m is a parameter; one mean depth per chunk;
  - the k⊥ = 0 modes are left out (zero after the mean removal), so the smallest |k| is the sky
    fundamental 2π/L_sky; bins are log-spaced from it to the chunk's Nyquist π/min(cell),
    modes beyond (the corners of the k cube) are dropped; no window along the line of sight
    (chunks are not periodic: a small, identical leakage in train and test);
  - Δ² is averaged over the modes in a bin (each mode's own k³).
The chunk's mean and rms brightness are not separate features (the mean is not measurable; the
rms is the integral of the power spectrum). Features: log10(Δ² + floor), (N, n_chunks·n_k)
float32.

Regressor: an MLP (``layers`` hidden layers, GELU, dropout) on standardised features (train
mean/std) with a heteroscedastic Gaussian head (μ, log σ in prior-normalised units, clamped as
model.py's), trained by :func:`training.lightcone.train.gaussian_nll` with AdamW, early
stopping on validation NLL. A deep ensemble of ``members`` seeds: mixture mean, total variance =
mean of the members' σ² (aleatoric) + variance of their μ (epistemic); then one σ scale per
parameter fitted on validation (s² = mean(z²), floored at ``min_sigma_scale`` as the CNN's
``train.min_sigma_scale``), as train.sigma_scale does.

Optional thermal noise (``--noise-hours``): only where the SKA1-Low uv coverage of the config's
grid is already cached (``data/uv-<key>.npz``, written by ``specula train lightcone``); it is
never computed here. Train/val cubes get ``noise_reps`` fixed noise draws each, at observing
times drawn from the config's ``noise.train_obs_time_range_h`` (as the CNN is trained), test
cubes ``cfg.noise.eval_realisations`` draws at ``--noise-hours``.

Reproduce (one CPU thread; ~20 s for v3, ~2 min for v4's first 600 accepted cubes, most of it
loading and resampling; --data defaults to the config's dataset file under data/):
  python -m training.lightcone.summary_baseline --config training/lightcone/configs/lightcone_v4.json \
      --json runs/summary_baseline_v4.json
  python -m training.lightcone.summary_baseline --config training/lightcone/configs/lightcone_v3.json \
      --json runs/summary_baseline_v3.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.lightcones import LightconeGrid

from . import dataset
from .config import LightconeConfig, load_config
from .evaluate import metrics
from .model import LOGSIG_MAX, LOGSIG_MIN
from .noise import ThermalNoise, _key, comoving_edges, uv_maps
from .train import gaussian_nll, grid_cubes, normalise_params, prior_arrays

REPO = Path(__file__).resolve().parents[2]


@dataclass
class BaselineConfig:
    n_chunks: int = 8  # line-of-sight chunks (redshift ranges)
    n_k: int = 8  # log |k| bins per chunk
    floor_mk2: float = 1e-4  # added to Δ² before log10 (empty bins, fully ionised chunks)
    fiducial_omm: float = 0.31  # Ω_m for channel depths (as NoiseConfig.wedge_omm)
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    max_epochs: int = 1500
    patience: int = 150  # epochs without a better validation NLL
    members: int = 3  # deep-ensemble size (seeds seed, seed + 1, ...)
    seed: int = 0
    min_sigma_scale: float = 1.0  # σ calibration may only widen (the CNN's default)
    noise_reps: int = 8  # noise draws per train/val cube with --noise-hours
    threads: int = 1


# ---------------------------------------------------------------------------- features


def chunk_bounds(n_los: int, n_chunks: int) -> list[tuple[int, int]]:
    """Contiguous channel ranges [a, b) along the line of sight (np.array_split's sizes)."""
    sizes = [len(c) for c in np.array_split(np.arange(n_los), n_chunks)]
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def channel_depths_mpc(grid: LightconeGrid, omm: float) -> np.ndarray:
    """Comoving depth (Mpc) of each channel, in the grid's order (ascending frequency)."""
    return np.abs(np.diff(comoving_edges(grid, omm)))[::-1]


def k_edges(cell_mpc: tuple[float, float, float], shape: tuple[int, int, int], n_k: int
            ) -> np.ndarray:
    """``n_k`` + 1 log-spaced |k| edges (Mpc⁻¹): sky fundamental → Nyquist of the finest axis."""
    lo = 2 * math.pi / max(shape[0] * cell_mpc[0], shape[1] * cell_mpc[1])
    hi = math.pi / min(cell_mpc)
    e = np.geomspace(lo, hi, n_k + 1)
    e[0] *= 1 - 1e-9  # the fundamental itself is in the first bin
    e[-1] *= 1 + 1e-9
    return e


def power_operator(cell_mpc: tuple[float, float, float], shape: tuple[int, int, int], n_k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(A, counts): |FFT|² (flattened, numpy's fftn order) @ A = Δ² per bin in mK², and the
    number of modes per bin. Modes with k⊥ = 0 or |k| outside the edges get weight 0."""
    ks = [2 * math.pi * np.fft.fftfreq(n, d=c) for n, c in zip(shape, cell_mpc)]
    kperp2 = ks[0][:, None] ** 2 + ks[1][None, :] ** 2
    k = np.sqrt(kperp2[:, :, None] + ks[2][None, None, :] ** 2).ravel()
    keep = np.broadcast_to((kperp2 > 0)[:, :, None], shape).ravel()
    idx = np.digitize(k, k_edges(cell_mpc, shape, n_k)) - 1
    ok = keep & (idx >= 0) & (idx < n_k)
    counts = np.bincount(idx[ok], minlength=n_k)
    volume = float(np.prod([n * c for n, c in zip(shape, cell_mpc)]))
    n_cells = float(np.prod(shape))
    a = np.zeros((k.size, n_k))
    rows = np.flatnonzero(ok)
    a[rows, idx[ok]] = (k[ok] ** 3 * volume / n_cells ** 2 / (2 * math.pi ** 2)
                        / counts[idx[ok]])
    return a, counts


def chunk_geometry(grid: LightconeGrid, n_chunks: int, n_k: int, omm: float
                   ) -> list[dict[str, Any]]:
    """Per chunk: channel range, cell sizes (Mpc), |k| edges and bin centres, mean redshift."""
    depth = channel_depths_mpc(grid, omm)
    out = []
    for a, b in chunk_bounds(grid.n_los, n_chunks):
        cell = (grid.cell_mpc, grid.cell_mpc, float(depth[a:b].mean()))
        shape = (grid.n_xy, grid.n_xy, b - a)
        e = k_edges(cell, shape, n_k)
        out.append({"channels": (a, b), "cell_mpc": cell, "shape": shape, "k_edges": e,
                    "k_centres": np.sqrt(e[1:] * e[:-1]),
                    "z_mean": float(grid.redshifts[a:b].mean())})
    return out


def power_spectra(cubes_mk: np.ndarray, grid: LightconeGrid, n_chunks: int, n_k: int, *,
                  omm: float = 0.31, batch: int = 128) -> np.ndarray:
    """Model-grid cubes (N, n_xy, n_xy, n_los) mK → Δ²(k) (N, n_chunks, n_k) float64, mK²."""
    cubes_mk = np.asarray(cubes_mk)
    out = np.zeros((len(cubes_mk), n_chunks, n_k))
    for j, geo in enumerate(chunk_geometry(grid, n_chunks, n_k, omm)):
        a, b = geo["channels"]
        op, _ = power_operator(geo["cell_mpc"], geo["shape"], n_k)
        for s in range(0, len(cubes_mk), batch):
            c = cubes_mk[s:s + batch, :, :, a:b].astype(np.float32)
            c -= c.mean(axis=(1, 2), keepdims=True)  # each channel's sky mean
            f = np.fft.fftn(c, axes=(1, 2, 3))
            p = (f.real ** 2 + f.imag ** 2).reshape(len(c), -1)
            out[s:s + batch, j] = p.astype(np.float64) @ op
    return out


def features(cubes_mk: np.ndarray, grid: LightconeGrid, n_chunks: int, n_k: int, *,
             omm: float = 0.31, floor_mk2: float = 1e-4) -> np.ndarray:
    """Model-grid cubes (N, n_xy, n_xy, n_los) mK → log10(Δ² / mK² + floor) as float32
    (N, n_chunks·n_k), chunk-major (chunk 0 = lowest frequency = highest redshift)."""
    d2 = power_spectra(cubes_mk, grid, n_chunks, n_k, omm=omm)
    return np.log10(d2 + floor_mk2).reshape(len(d2), -1).astype(np.float32)


# ---------------------------------------------------------------------------- regressor


class SummaryMLP(nn.Module):
    """Features → (μ_norm, log σ_norm), each (N, n_params), as LightconeNet's head."""

    def __init__(self, n_in: int, n_params: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        mods: list[nn.Module] = []
        w = n_in
        for _ in range(layers):
            mods += [nn.Linear(w, hidden), nn.GELU(), nn.Dropout(dropout)]
            w = hidden
        mods.append(nn.Linear(w, 2 * n_params))
        self.net = nn.Sequential(*mods)
        self.n_params = n_params

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        mu, logsig = out[:, : self.n_params], out[:, self.n_params:]
        return mu, torch.clamp(logsig, LOGSIG_MIN, LOGSIG_MAX)


@torch.no_grad()
def predict(net: SummaryMLP, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    mu, ls = net(torch.from_numpy(x))
    return mu.numpy(), torch.exp(ls).numpy()


def nll(mu: np.ndarray, sig: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(0.5 * ((y - mu) / sig) ** 2 + np.log(sig)))


def train_member(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
                 bc: BaselineConfig, seed: int) -> tuple[SummaryMLP, dict[str, Any]]:
    """One ensemble member; the epoch with the best validation NLL is kept."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SummaryMLP(x_tr.shape[1], y_tr.shape[1], bc.hidden, bc.layers, bc.dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=bc.lr, weight_decay=bc.weight_decay)
    x, y = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    best: tuple[float, dict[str, torch.Tensor] | None, int] = (np.inf, None, -1)
    since, epoch = 0, 0
    for epoch in range(bc.max_epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), bc.batch_size):
            idx = perm[s:s + bc.batch_size]
            mu, ls = net(x[idx])
            loss = gaussian_nll(mu, ls, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = nll(*predict(net, x_va), y_va)
        if v < best[0]:
            best, since = (v, {k: t.clone() for k, t in net.state_dict().items()}, epoch), 0
        else:
            since += 1
            if since >= bc.patience:
                break
    if best[1] is not None:
        net.load_state_dict(best[1])
    net.eval()
    return net, {"best_epoch": best[2] + 1, "epochs": epoch + 1, "val_nll": best[0]}


def ensemble_predict(nets: list[SummaryMLP], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mixture mean and total σ (normalised units): σ² = mean σ_m² + var μ_m."""
    mus, sigs = zip(*(predict(n, x) for n in nets))
    mu, sig = np.stack(mus), np.stack(sigs)
    return mu.mean(0), np.sqrt((sig ** 2).mean(0) + mu.var(0))


def fit_sigma_scale(mu: np.ndarray, sig: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-parameter s with mean((y − μ)/(s σ))² = 1 on held-out data (train.sigma_scale)."""
    return np.sqrt(np.mean(((y - mu) / sig) ** 2, axis=0))


@dataclass
class Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 1e-6, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def fit_ensemble(feats: dict[str, np.ndarray], ys: dict[str, np.ndarray], bc: BaselineConfig,
                 log=print) -> dict[str, Any]:
    """Train ``bc.members`` MLPs on the train split; σ scale on val. Returns the nets, the
    standardiser, the (raw, used) σ scales and per-member histories."""
    st = Standardiser.fit(feats["train"])
    x_tr, x_va = st(feats["train"]), st(feats["val"])
    nets, hists = [], []
    for m in range(bc.members):
        t0 = time.time()
        net, h = train_member(x_tr, ys["train"], x_va, ys["val"], bc, bc.seed + m)
        h["seconds"] = time.time() - t0
        log(f"member {m}: best epoch {h['best_epoch']}/{h['epochs']}, val NLL "
            f"{h['val_nll']:.3f} ({h['seconds']:.0f} s)")
        nets.append(net)
        hists.append(h)
    mu, sig = ensemble_predict(nets, x_va)
    raw = fit_sigma_scale(mu, sig, ys["val"])
    return {"nets": nets, "standardiser": st, "sigma_scale_raw": raw,
            "sigma_scale": np.maximum(raw, bc.min_sigma_scale), "members": hists}


def physical(fit: dict[str, Any], x: np.ndarray, cfg: LightconeConfig
             ) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated mean and σ in physical units for raw features ``x``."""
    low, high = prior_arrays(cfg)
    mu, sig = ensemble_predict(fit["nets"], fit["standardiser"](x))
    return low + (high - low) * mu, (high - low) * sig * fit["sigma_scale"]


def prior_prediction(cfg: LightconeConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    low, high = prior_arrays(cfg)
    return (np.tile((low + high) / 2, (n, 1)), np.tile((high - low) / math.sqrt(12), (n, 1)))


# ---------------------------------------------------------------------------- data and report


def noisy_features(cubes_mk: np.ndarray, noise: ThermalNoise, rng: np.random.Generator,
                   reps: int, time_range: list[float], bc: BaselineConfig, grid: LightconeGrid,
                   batch: int = 64) -> np.ndarray:
    """Features of ``reps`` noise draws of every cube, cube-major: (N·reps, n_feat)."""
    out = []
    for s in range(0, len(cubes_mk), batch):
        mk = np.repeat(cubes_mk[s:s + batch], reps, axis=0)
        mk = mk + noise.sample(rng, len(mk), noise.draw_times(rng, len(mk), time_range))
        out.append(features(mk, grid, bc.n_chunks, bc.n_k, omm=bc.fiducial_omm,
                            floor_mk2=bc.floor_mk2))
    return np.concatenate(out)


def markdown_table(base: dict[str, dict[str, float]], prior: dict[str, dict[str, float]]
                   ) -> str:
    lines = [("| parameter | R² | 68% cov. | 95% cov. | mean σ / width | NLL | prior R² | "
              "prior 68% | prior 95% | prior NLL |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in base.items():
        p = prior[name]
        lines.append(f"| {name} | {m['r2']:.3f} | {m['coverage_68']:.2f} | "
                     f"{m['coverage_95']:.2f} | {m['mean_sigma_over_prior_width']:.3f} | "
                     f"{m['nll_norm']:.2f} | {p['r2']:.3f} | {p['coverage_68']:.2f} | "
                     f"{p['coverage_95']:.2f} | {p['nll_norm']:.2f} |")
    return "\n".join(lines)


def run(cfg: LightconeConfig, data: Path, bc: BaselineConfig, *, noise_hours: float = 0.0,
        data_dir: Path = REPO / "data", log=print) -> dict[str, Any]:
    torch.set_num_threads(max(bc.threads, 1))
    grid = cfg.grid.model_grid()
    noise = None
    if noise_hours > 0:
        uv_path = data_dir / f"uv-{_key(cfg)}.npz"
        if not uv_path.is_file():
            raise SystemExit(f"{uv_path}: no cached uv coverage for this grid; it is not "
                             f"computed here (specula train lightcone writes it)")
        noise = ThermalNoise(cfg, uv_maps(cfg, data_dir, log), obs_time_h=noise_hours)
    rng = np.random.default_rng(cfg.noise.seed)
    feats, ys, thetas, n, t_feat, t_load = {}, {}, {}, {}, 0.0, 0.0
    for split in dataset.SPLITS:
        t0 = time.time()
        d = dataset.load(data, cfg, split)
        mk = grid_cubes(d["cubes"], cfg)
        t1 = time.time()
        n[split], theta = len(mk), d["params"]
        if noise is None:
            feats[split] = features(mk, grid, bc.n_chunks, bc.n_k, omm=bc.fiducial_omm,
                                    floor_mk2=bc.floor_mk2)
        else:
            train_like = split != "test"
            reps = bc.noise_reps if train_like else cfg.noise.eval_realisations
            feats[split] = noisy_features(mk, noise, rng, reps,
                                          cfg.noise.train_obs_time_range_h if train_like
                                          else [], bc, grid)
            theta = np.repeat(theta, reps, axis=0)
        t_feat += time.time() - t1
        t_load += t1 - t0
        thetas[split], ys[split] = theta, normalise_params(theta, cfg)
        log(f"{split}: {n[split]} cubes ({t1 - t0:.1f} s load + resample, "
            f"{time.time() - t1:.1f} s features)")
    t0 = time.time()
    fit = fit_ensemble(feats, ys, bc, log)
    t_train = time.time() - t0
    mean, sigma = physical(fit, feats["test"], cfg)
    base = metrics(thetas["test"], mean, sigma, cfg)
    prior = metrics(thetas["test"], *prior_prediction(cfg, len(thetas["test"])), cfg)
    geo = chunk_geometry(grid, bc.n_chunks, bc.n_k, bc.fiducial_omm)
    return {"config": cfg.name, "config_version": cfg.version, "data": str(data),
            "baseline": asdict(bc), "noise_hours": noise_hours,
            "n_train": n["train"], "n_val": n["val"], "n_test": n["test"],
            "n_test_rows": len(thetas["test"]),
            "load_seconds": t_load, "feature_seconds": t_feat, "train_seconds": t_train,
            "sigma_scale_raw": fit["sigma_scale_raw"].tolist(),
            "sigma_scale": fit["sigma_scale"].tolist(), "members": fit["members"],
            "chunks": [{"channels": g["channels"], "z_mean": g["z_mean"],
                        "depth_mpc": g["cell_mpc"][2], "k_centres": g["k_centres"].tolist()}
                       for g in geo],
            "per_parameter": base, "prior": prior}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="power spectrum + MLP baseline for the lightcone "
                                             "regressor (issue 20)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", default=None, help="dataset file (default: the config's)")
    ap.add_argument("--data-dir", default=str(REPO / "data"))
    ap.add_argument("--chunks", type=int, default=BaselineConfig.n_chunks)
    ap.add_argument("--k-bins", type=int, default=BaselineConfig.n_k)
    ap.add_argument("--members", type=int, default=BaselineConfig.members)
    ap.add_argument("--seed", type=int, default=BaselineConfig.seed)
    ap.add_argument("--threads", type=int, default=BaselineConfig.threads)
    ap.add_argument("--noise-hours", type=float, default=0.0,
                    help="> 0: SKA1-Low thermal noise at this observing time (cached uv only)")
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    data = Path(a.data) if a.data else dataset.dataset_path(cfg, Path(a.data_dir))
    bc = BaselineConfig(n_chunks=a.chunks, n_k=a.k_bins, members=a.members, seed=a.seed,
                        threads=a.threads)
    t0 = time.time()
    res = run(cfg, data, bc, noise_hours=a.noise_hours, data_dir=Path(a.data_dir))
    res["wall_seconds"] = time.time() - t0
    noise = f"thermal noise {a.noise_hours:g} h" if a.noise_hours else "noiseless"
    print(f"\n{cfg.name} v{cfg.version} config, {data}: train {res['n_train']}, val "
          f"{res['n_val']}, test {res['n_test']} ({res['n_test_rows']} rows, {noise}); "
          f"{bc.n_chunks} chunks × {bc.n_k} k bins, {bc.members} members; σ scale (raw) "
          f"{np.round(res['sigma_scale_raw'], 2).tolist()}; features {res['feature_seconds']:.1f}"
          f" s, training {res['train_seconds']:.0f} s, wall {res['wall_seconds']:.0f} s\n")
    print(markdown_table(res["per_parameter"], res["prior"]))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
