"""Train the deep ensemble: members one after another, each from its own random init and order.

Loss per member: cross-entropy over the 13 labels + w · β-NLL of t = ln(1+z) under N(μ, σ²).
β-NLL (Seitzer et al. 2022, β = 0.5) weights each sample's Gaussian NLL by stop-grad(σ^{2β}) so
that the network cannot buy a low loss by declaring hard spectra noisy and ignoring them.

A checkpoint (``checkpoint.pt``) stores the config and every member's weights, so that
``export_onnx``, ``calibrate`` and ``evaluate`` rebuild the ensemble from it alone.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from service.spectra import DEFAULT_GRID

from .config import Config, config_to_dict
from .model import Ensemble, SpectrumNet
from .simulate import LABELS


def gaussian_beta_nll(mu: torch.Tensor, logvar: torch.Tensor, t: torch.Tensor,
                      beta: float) -> torch.Tensor:
    nll = 0.5 * (logvar + (t - mu) ** 2 * torch.exp(-logvar))
    if beta > 0:
        nll = nll * torch.exp(logvar.detach() * beta)
    return nll.mean()


def member_loss(out, y: torch.Tensor, t: torch.Tensor, cfg: Config) -> tuple[torch.Tensor, dict]:
    logits, mu, logvar = out
    ce = F.cross_entropy(logits, y, label_smoothing=cfg.train.label_smoothing)
    nll = gaussian_beta_nll(mu, logvar, t, cfg.train.beta_nll)
    return ce + cfg.train.z_loss_weight * nll, {"ce": ce.item(), "nll": nll.item()}


def lr_at(progress: float, peak: float, warmup: float = 0.1) -> float:
    """Linear warm-up to ``peak`` then cosine to ~0 (a one-cycle policy)."""
    if progress < warmup:
        return peak * (0.05 + 0.95 * progress / warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup))) + 1e-6


def _batches(n: int, bs: int, rng: np.random.Generator):
    idx = rng.permutation(n)
    for s in range(0, n - bs + 1, bs):
        yield np.sort(idx[s:s + bs])


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


def train_member(k: int, cfg: Config, train: dict, val: dict, log) -> SpectrumNet:
    """Train member ``k`` (seeded ``cfg.seed * 1000 + k``: its own init and data order)."""
    seed = cfg.seed * 1000 + k
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SpectrumNet(cfg.model, len(LABELS), DEFAULT_GRID.npix)
    tc = cfg.train
    n = len(train["label"])
    steps_per_epoch = max(n // tc.batch_size, 1)
    total = steps_per_epoch * tc.epochs
    if tc.max_steps > 0:
        total = min(total, tc.max_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.time_budget_s <= 0:
        budget = math.inf
    elif tc.parallel_members:
        budget = tc.time_budget_s  # all members run at once
    else:
        budget = tc.time_budget_s / max(tc.members, 1)
    X, y = train["x"], torch.from_numpy(train["label"].astype(np.int64))
    t = torch.from_numpy(np.log1p(train["z"]).astype(np.float32))
    step, t0, progress = 0, time.time(), 0.0
    model.train()
    while progress < 1.0:
        for idx in _batches(n, tc.batch_size, rng):
            # One-cycle schedule over progress = max(step fraction, wall-time fraction): the run
            # is deterministic unless the time budget binds, and then it still anneals fully.
            progress = max(step / total, (time.time() - t0) / budget)
            if progress >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(progress, tc.lr)
            xb = to_tensor(X[idx])
            out = model(xb)
            loss, parts = member_loss(out, y[idx], t[idx], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            if step % 100 == 0:
                log(f"member {k} step {step}/{total} loss {loss.item():.4f} ce {parts['ce']:.4f} "
                    f"nll {parts['nll']:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                    f"{(time.time() - t0) / step * 1e3:.0f} ms/step")
        if val is not None and len(val["label"]):
            acc = evaluate_member(model, val)
            log(f"member {k} after step {step}: val accuracy {acc:.4f}")
            model.train()
    if step < total:
        log(f"member {k}: time budget reached after {step}/{total} steps")
    model.steps_done = step
    model.eval()
    return model


@torch.no_grad()
def predict_members(members: list[SpectrumNet], X: np.ndarray, bs: int = 512):
    """Raw per-member outputs: logits (M, N, K), μ (M, N), log σ² (M, N) as numpy."""
    logits, mu, lv = [], [], []
    for m in members:
        m.eval()
        lo, mm, ll = [], [], []
        for s in range(0, len(X), bs):
            a, b, c = m(to_tensor(X[s:s + bs]))
            lo.append(a.numpy()), mm.append(b.numpy()), ll.append(c.numpy())
        logits.append(np.concatenate(lo)), mu.append(np.concatenate(mm)), lv.append(np.concatenate(ll))
    return np.stack(logits), np.stack(mu), np.stack(lv)


def evaluate_member(model: SpectrumNet, val: dict) -> float:
    logits, _, _ = predict_members([model], val["x"])
    return float((logits[0].argmax(-1) == val["label"]).mean())


def save_checkpoint(path: Path, cfg: Config, members: list[SpectrumNet], extra: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config_to_dict(cfg), "members": [m.state_dict() for m in members],
                "labels": LABELS, "grid": DEFAULT_GRID.to_manifest(), **extra}, path)


def load_checkpoint(path: Path) -> tuple[Config, Ensemble, dict]:
    """Rebuild the ensemble (with its calibration, if fitted) from a checkpoint alone."""
    from .config import config_from_dict

    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = config_from_dict(ck["config"])
    members = []
    for sd in ck["members"]:
        m = SpectrumNet(cfg.model, len(ck["labels"]), int(ck["grid"]["npix"]))
        m.load_state_dict(sd)
        m.eval()
        members.append(m)
    ens = Ensemble(members, ck.get("temperature", 1.0), ck.get("z_sigma_scale", 1.0)).eval()
    return cfg, ens, ck


_FORK_STATE: dict = {}  # set before forking: workers inherit it instead of unpickling ~1 GB


def _train_member_process(k: int) -> tuple[dict, int]:
    cfg, train, val, log = (_FORK_STATE[n] for n in ("cfg", "train", "val", "log"))
    torch.set_num_threads(1)
    model = train_member(k, cfg, train, val, log)
    return model.state_dict(), int(model.steps_done)


def train_ensemble(cfg: Config, train: dict, val: dict, log) -> list[SpectrumNet]:
    """Train every member; with ``parallel_members`` one single-threaded process per member.

    Why processes: on a small CPU shared with other jobs, one 2-thread torch process loses most
    of its time at OpenMP barriers whenever one of its threads is descheduled; independent
    single-threaded members never wait for each other. Forked workers share the (read-only)
    training arrays copy-on-write. The parent must not have run torch before forking.
    """
    t0 = time.time()
    if cfg.train.parallel_members and cfg.train.members > 1:
        import multiprocessing as mp

        _FORK_STATE.update(cfg=cfg, train=train, val=val, log=log)
        try:
            with mp.get_context("fork").Pool(cfg.train.members) as pool:
                results = pool.map(_train_member_process, range(cfg.train.members))
        finally:
            _FORK_STATE.clear()
        members = []
        for sd, steps in results:
            m = SpectrumNet(cfg.model, len(LABELS), DEFAULT_GRID.npix)
            m.load_state_dict(sd)
            m.eval()
            m.steps_done = steps
            members.append(m)
        log(f"{len(members)} members trained in parallel in {time.time() - t0:.0f} s")
        torch.set_num_threads(max(cfg.train.threads, 1))
        return members
    torch.set_num_threads(max(cfg.train.threads, 1))
    members = []
    for k in range(cfg.train.members):
        t1 = time.time()
        members.append(train_member(k, cfg, train, val, log))
        log(f"member {k} trained in {time.time() - t1:.0f} s")
    return members


__all__ = ["load_checkpoint", "predict_members", "save_checkpoint", "train_ensemble"]
