"""Train the lightcone regressor: Gaussian negative log-likelihood in prior-normalised units.

Inputs go through the service's own preprocessing (``service.lightcones.preprocess``), so the
network sees exactly what the service will feed it. The data are small (a few hundred
simulations at most on this machine), so every epoch draws a fresh symmetry of each cube:
the sky axes of a 21cmFAST box are periodic and statistically isotropic, so periodic rolls,
flips and the x↔y transpose are exact symmetries of the data distribution (16·16·8 = 2048
variants per cube); the line of sight (time) is never touched.

With ``noise.train`` every batch also gets fresh SKA1-Low thermal noise (noise.ThermalNoise)
— at an observing time drawn per cube from ``train_obs_time_range_h`` if set — added in mK
on the model grid, after the sky symmetry and before the preprocessing — noise
is stationary on the sky, so it is drawn independently of the symmetry. Validation cubes get
``val_realisations`` fixed noise draws each, so early stopping and the σ calibration see the
same noisy data every epoch.

After training, one σ scale per parameter is fitted on the validation split
(s_k² = mean(z²), z = (θ − μ)/σ), the usual post-hoc calibration of a Gaussian regressor; it
is folded into the exported graph. The best epoch by validation NLL is kept.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.lightcones import make_lightcone, resample
from service.lightcones.preprocess import normalise

from ..common.runs import Paused
from .config import LightconeConfig, config_from_dict, config_to_dict
from .model import LightconeNet


def grid_cubes(cubes: np.ndarray, cfg: LightconeConfig) -> np.ndarray:
    """Dataset-grid cubes (N, n_xy, n_xy, n_los_ds) mK → model-grid cubes (N, n_xy, n_xy,
    n_los) mK, by the service's resampling (noise is added on this grid, then normalised)."""
    ds, grid = cfg.grid.dataset_grid(), cfg.grid.model_grid()
    out = np.empty((len(cubes), *grid.shape[1:]), dtype=np.float32)
    for i, c in enumerate(cubes):
        lc = make_lightcone(c.astype(np.float32), frequencies_mhz=ds.frequencies_mhz,
                            cell_mpc=ds.cell_mpc)
        out[i] = resample(lc, grid)[0]
    return out


def model_inputs(cubes: np.ndarray, cfg: LightconeConfig) -> np.ndarray:
    """Dataset-grid cubes (N, n_xy, n_xy, n_los_ds) mK → model input (N, 1, ...) float32:
    ``service.lightcones.preprocess`` (resample, then normalise by the config's version)."""
    return normalise(grid_cubes(cubes, cfg), cfg.grid.model_grid(),
                     cfg.grid.preprocess_version)


def noisy_inputs(cubes_mk: np.ndarray, y: np.ndarray, noise, rng: np.random.Generator,
                 reps: int, cfg: LightconeConfig) -> tuple[np.ndarray, np.ndarray]:
    """``reps`` noise draws of every model-grid cube → (model input, repeated targets)."""
    mk = np.repeat(cubes_mk, reps, axis=0)
    times = noise.draw_times(rng, len(mk), cfg.noise.train_obs_time_range_h)
    mk = mk + noise.sample(rng, len(mk), times)
    return (normalise(mk, cfg.grid.model_grid(), cfg.grid.preprocess_version),
            np.repeat(y, reps, axis=0))


def prior_arrays(cfg: LightconeConfig) -> tuple[np.ndarray, np.ndarray]:
    pr = cfg.priors()
    return np.array([p.low for p in pr]), np.array([p.high for p in pr])


def normalise_params(params: np.ndarray, cfg: LightconeConfig) -> np.ndarray:
    low, high = prior_arrays(cfg)
    return ((params - low) / (high - low)).astype(np.float32)


def gaussian_nll(mu: torch.Tensor, logsig: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (0.5 * ((y - mu) * torch.exp(-logsig)) ** 2 + logsig).mean()


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random sky symmetry per batch: periodic roll, flips, transpose of axes (2, 3)."""
    n = x.shape[2]
    sx, sy = (int(v) for v in torch.randint(0, n, (2,), generator=g))
    x = torch.roll(x, shifts=(sx, sy), dims=(2, 3))
    fx, fy, tr = (bool(v) for v in torch.randint(0, 2, (3,), generator=g))
    if fx:
        x = torch.flip(x, (2,))
    if fy:
        x = torch.flip(x, (3,))
    if tr:
        x = x.transpose(2, 3)
    return x


@torch.no_grad()
def predict(net: LightconeNet, x: np.ndarray, bs: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(μ_norm, σ_norm) as numpy."""
    net.eval()
    mus, sigs = [], []
    for s in range(0, len(x), bs):
        mu, ls = net(torch.from_numpy(x[s:s + bs]))
        mus.append(mu.numpy()), sigs.append(torch.exp(ls).numpy())
    return np.concatenate(mus), np.concatenate(sigs)


def sigma_scale(net: LightconeNet, x: np.ndarray, y: np.ndarray, floor: float = 0.0
                ) -> np.ndarray:
    """Per-parameter σ multiplier that makes mean(z²) = 1 on held-out data (≥ ``floor``)."""
    if len(x) < 8:
        return np.ones(y.shape[1], dtype=np.float32)
    mu, sig = predict(net, x)
    s = np.sqrt(np.mean(((y - mu) / sig) ** 2, axis=0))
    return np.maximum(s, floor).astype(np.float32)


def train(cfg: LightconeConfig, train_xy: tuple[np.ndarray, np.ndarray],
          val_xy: tuple[np.ndarray, np.ndarray], log=print, noise=None,
          state_path: Path | None = None) -> tuple[LightconeNet, dict[str, Any]]:
    """Returns the best network (by validation NLL) and a history dict.

    Without ``noise`` the training inputs are model inputs; with a ``noise.ThermalNoise``
    they are model-grid cubes in mK (N, 1, n_xy, n_xy, n_los), and each batch is made noisy
    and normalised here (``val_xy`` is then already-noisy model input).

    With ``state_path`` the whole training state (network, optimiser, schedule, every random
    generator, history, best epoch) is written there at the end of every epoch, and a state
    already there is continued: an interrupted or paused run resumes at its next epoch and
    takes the same steps an uninterrupted one would. ``train.session_seconds`` ends a session
    by raising :class:`Paused` after the epoch that crosses it; ``train.max_seconds`` counts
    training time over all sessions."""
    tc = cfg.train
    grid = cfg.grid.model_grid()
    torch.set_num_threads(max(tc.threads, 1))
    torch.manual_seed(cfg.seed)  # the network's initial weights
    x, y = torch.from_numpy(train_xy[0]), torch.from_numpy(train_xy[1])
    net = LightconeNet(cfg.model, cfg.grid.model_grid(), y.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = max(int(np.ceil(len(x) / tc.batch_size)), 1)
    total = steps_per_epoch * tc.epochs
    if tc.max_steps > 0:
        total = min(total, tc.max_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=total,
                                                pct_start=0.1)
    st = _TrainState.fresh(cfg, len(x))
    if state_path is not None and state_path.exists():
        st = _TrainState.load(state_path, net, opt, sched)
        if st.n_train != len(x):
            raise ValueError(f"{state_path}: trained on {st.n_train} cubes, given {len(x)}")
        log(f"resumed at epoch {st.epoch + 1} (step {st.step}, {st.seconds:.0f} s trained)")
    torch.set_rng_state(st.torch_rng)
    g = torch.Generator()
    g.set_state(st.batch_rng)
    noise_rng = np.random.default_rng()
    noise_rng.bit_generator.state = st.noise_rng
    t0, t_session = time.time() - st.seconds, time.time()
    while not st.done:
        epoch = st.epoch
        net.train()
        perm = torch.randperm(len(x), generator=g)
        losses = []
        for s in range(0, len(x), tc.batch_size):
            idx = perm[s:s + tc.batch_size]
            if len(idx) < 2:  # batch norm needs two
                continue
            xb = augment(x[idx], g) if tc.augment else x[idx]
            if noise is not None:
                times = noise.draw_times(noise_rng, len(idx), cfg.noise.train_obs_time_range_h)
                mk = xb[:, 0].numpy() + noise.sample(noise_rng, len(idx), times)
                xb = torch.from_numpy(normalise(mk, grid, cfg.grid.preprocess_version))
            mu, ls = net(xb)
            loss = gaussian_nll(mu, ls, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            st.step += 1
            if st.step >= total:
                break
        val_nll = np.nan
        if len(val_xy[0]):
            mu, sig = predict(net, val_xy[0])
            val_nll = float(np.mean(0.5 * ((val_xy[1] - mu) / sig) ** 2 + np.log(sig)))
        hist = st.history
        hist["train_nll"].append(float(np.mean(losses)) if losses else np.nan)
        hist["val_nll"].append(val_nll)
        score = val_nll if np.isfinite(val_nll) else hist["train_nll"][-1]
        if score < st.best_score:
            st.best_score, st.best_epoch, st.since_best = score, epoch, 0
            st.best_model = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            st.since_best += 1
        st.epoch, st.seconds = epoch + 1, time.time() - t0
        log(f"epoch {epoch + 1}/{tc.epochs} step {st.step} train nll {hist['train_nll'][-1]:.3f} "
            f"val nll {val_nll:.3f} ({st.seconds:.0f} s)")
        if st.step >= total or st.since_best >= tc.patience or st.epoch >= tc.epochs:
            st.done = True
        elif tc.max_seconds and st.seconds > tc.max_seconds:
            log(f"stopping after {st.seconds:.0f} s (train.max_seconds)")
            hist["stopped_on_time"] = epoch + 1
            st.done = True
        st.torch_rng, st.batch_rng = torch.get_rng_state(), g.get_state()
        st.noise_rng = noise_rng.bit_generator.state
        if state_path is not None:
            st.save(state_path, net, opt, sched)
        if not st.done and tc.session_seconds and time.time() - t_session > tc.session_seconds:
            raise Paused(f"train.session_seconds = {tc.session_seconds:g} reached after epoch "
                         f"{st.epoch}")
    if st.best_model is not None:
        net.load_state_dict(st.best_model)
    net.eval()
    hist = dict(st.history)
    hist.update(best_epoch=st.best_epoch + 1, steps=st.step, seconds=st.seconds)
    return net, hist


@dataclass
class _TrainState:
    """Everything an epoch boundary needs to continue as if never stopped."""

    n_train: int
    torch_rng: torch.Tensor
    batch_rng: torch.Tensor
    noise_rng: dict[str, Any]
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    done: bool = False
    best_score: float = np.inf
    best_epoch: int = -1
    since_best: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    history: dict[str, Any] = field(default_factory=lambda: {"train_nll": [], "val_nll": []})

    @classmethod
    def fresh(cls, cfg: LightconeConfig, n_train: int) -> _TrainState:
        """The generators a fresh run starts from: the config's seeds, and the global torch
        generator (dropout) where initialising the network left it."""
        return cls(n_train=n_train, torch_rng=torch.get_rng_state(),
                   batch_rng=torch.Generator().manual_seed(cfg.seed).get_state(),
                   noise_rng=np.random.default_rng(cfg.noise.seed + 1000).bit_generator.state)

    @classmethod
    def load(cls, path: Path, net: nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler) -> _TrainState:
        blob = torch.load(path, map_location="cpu", weights_only=False)  # our own run dir
        net.load_state_dict(blob.pop("net"))
        opt.load_state_dict(blob.pop("opt"))
        sched.load_state_dict(blob.pop("sched"))
        return cls(**blob)

    def save(self, path: Path, net: nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler) -> None:
        """Atomically (a killed save leaves the previous epoch's state intact)."""
        blob = {**{f.name: getattr(self, f.name) for f in fields(self)},
                "net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
        tmp = path.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)


def save_checkpoint(path: Path, cfg: LightconeConfig, net: LightconeNet, scale: np.ndarray,
                    extra: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config_to_dict(cfg), "state_dict": net.state_dict(),
                "sigma_scale": scale.tolist(), **extra}, path)


def load_checkpoint(path: Path) -> tuple[LightconeConfig, LightconeNet, np.ndarray]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = config_from_dict(ck["config"])
    net = LightconeNet(cfg.model, cfg.grid.model_grid(), len(cfg.param_names))
    net.load_state_dict(ck["state_dict"])
    return cfg, net.eval(), np.asarray(ck["sigma_scale"], dtype=np.float32)
