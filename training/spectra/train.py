"""Train the deep ensemble: members one after another, each from its own random init and order.

Loss per member: cross-entropy over the 13 labels + w · β-NLL of t = ln(1+z) under N(μ, σ²).
β-NLL (Seitzer et al. 2022, β = 0.5) weights each sample's Gaussian NLL by stop-grad(σ^{2β}) so
that the network cannot buy a low loss by declaring hard spectra noisy and ignoring them.

A checkpoint (``checkpoint.pt``) stores the config and every member's weights, so that
``export_onnx``, ``calibrate`` and ``evaluate`` rebuild the ensemble from it alone.

Training is resumable: each member keeps ``members/member<k>.pt`` in the run directory
(weights, AdamW state, step/epoch/batch, the epoch's data-order RNG state, torch's RNG state,
best validation loss and weights, loss history), written at every epoch end, every
``checkpoint_every_s`` and when a session stops. A member stops when its steps are done or the
simulated validation loss has not improved for ``patience`` epochs; ``time_budget_s`` and
``session_epochs`` only end a session, which ``specula train spectra --resume RUN_DIR``
continues exactly where it stopped.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from service.spectra import DEFAULT_GRID

from ..common.runs import Paused
from .config import Config, config_from_dict, config_to_dict
from .labels import LABELS
from .model import Ensemble, SpectrumNet


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


def epoch_batches(n: int, bs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches (sorted indices, for contiguous reads) from one permutation."""
    idx = rng.permutation(n)
    return [np.sort(idx[s:s + bs]) for s in range(0, n - bs + 1, bs)]


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


# ---------------------------------------------------------------------- resumable state
def member_path(run_dir: Path | None, k: int) -> Path | None:
    return None if run_dir is None else Path(run_dir) / "members" / f"member{k}.pt"


def new_state(k: int, cfg: Config, n: int) -> dict:
    """Everything a member needs to continue exactly: weights, optimiser, position, RNGs, history.

    The learning-rate schedule is a pure function of the step (``lr_at(step/total)``), so the
    step and the planned total are the scheduler's whole state.
    """
    tc = cfg.train
    total = max(n // tc.batch_size, 1) * tc.epochs
    if tc.max_steps > 0:
        total = min(total, tc.max_steps)
    return {"member": k, "step": 0, "epoch": 0, "batch": 0, "total": total, "done": False,
            "epoch_rng": np.random.default_rng(cfg.seed * 1000 + k).bit_generator.state,
            "best_val": math.inf, "best_model": None, "epochs_since_best": 0, "history": []}


def save_state(path: Path | None, state: dict, model: SpectrumNet, opt) -> None:
    """Atomic write, so that a killed session leaves the previous checkpoint intact."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {**state, "model": model.state_dict(), "opt": opt.state_dict(),
            "torch_rng": torch.get_rng_state()}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_state(path: Path | None, model: SpectrumNet, opt) -> dict | None:
    if path is None or not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(blob.pop("model"))
    opt.load_state_dict(blob.pop("opt"))
    torch.set_rng_state(blob.pop("torch_rng"))
    return blob


@torch.no_grad()
def validation_loss(model: SpectrumNet, val: dict, cfg: Config, bs: int = 512) -> tuple[float, float]:
    """(mean loss, accuracy) on the simulated validation split: the plateau criterion."""
    model.eval()
    y = torch.from_numpy(val["label"].astype(np.int64))
    t = torch.from_numpy(np.log1p(val["z"]).astype(np.float32))
    total, correct = 0.0, 0
    for s in range(0, len(y), bs):
        out = model(to_tensor(val["x"][s:s + bs]))
        loss, _ = member_loss(out, y[s:s + bs], t[s:s + bs], cfg)
        total += loss.item() * len(out[0])
        correct += int((out[0].argmax(-1) == y[s:s + bs]).sum())
    model.train()
    return total / len(y), correct / len(y)


def end_of_epoch(k: int, state: dict, model: SpectrumNet, val: dict | None, cfg: Config,
                 train_loss: float | None, log) -> None:
    """Record the epoch, keep the best weights, and decide whether the member is done."""
    entry = {"epoch": state["epoch"], "step": state["step"], "train_loss": train_loss}
    if val is not None and len(val["label"]):
        vl, acc = validation_loss(model, val, cfg)
        entry.update(val_loss=vl, val_accuracy=acc)
        if vl < state["best_val"] - cfg.train.min_delta:
            state.update(best_val=vl, epochs_since_best=0,
                         best_model={n: p.detach().clone() for n, p in model.state_dict().items()})
        else:
            state["epochs_since_best"] += 1
        log(f"member {k} epoch {state['epoch']} step {state['step']}: val loss {vl:.4f} "
            f"accuracy {acc:.4f} (best {state['best_val']:.4f}, {state['epochs_since_best']} "
            f"epochs without improvement)")
    state["history"].append(entry)
    state["epoch"] += 1
    state["batch"] = 0
    plateau = 0 < cfg.train.patience <= state["epochs_since_best"]
    if plateau:
        log(f"member {k}: validation loss plateaued for {cfg.train.patience} epochs, stopping")
    state["done"] = plateau or state["step"] >= state["total"] or state["epoch"] >= cfg.train.epochs


def train_step(model: SpectrumNet, opt, xb: torch.Tensor, yb: torch.Tensor, tb: torch.Tensor,
               lr: float, cfg: Config) -> tuple[float, dict]:
    for g in opt.param_groups:
        g["lr"] = lr
    loss, parts = member_loss(model(xb), yb, tb, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return loss.item(), parts


def run_epoch(k: int, state: dict, model: SpectrumNet, opt, train: dict, cfg: Config,
              deadline: float, save, log) -> list[float] | None:
    """Train from ``state['batch']`` to the end of the epoch: its losses, None if the session ran out.

    The epoch's permutation is regenerated from the RNG state saved at its start, so a member
    resumed mid-epoch sees exactly the batches it would have seen.
    """
    tc = cfg.train
    rng = np.random.default_rng()
    rng.bit_generator.state = state["epoch_rng"]
    batches = epoch_batches(len(train["label"]), tc.batch_size, rng)
    X, y = train["x"], train["label"]
    t_last, losses = time.time(), []
    for b in range(state["batch"], len(batches)):
        if state["step"] >= state["total"]:
            break
        if time.time() >= deadline:
            return None
        idx = batches[b]
        loss, parts = train_step(model, opt, to_tensor(X[idx]), torch.from_numpy(y[idx].astype(np.int64)),
                                 torch.from_numpy(np.log1p(train["z"][idx]).astype(np.float32)),
                                 lr_at(state["step"] / state["total"], tc.lr), cfg)
        losses.append(loss)
        state["step"] += 1
        state["batch"] = b + 1
        if state["step"] % 100 == 0:
            log(f"member {k} step {state['step']}/{state['total']} loss {loss:.4f} "
                f"ce {parts['ce']:.4f} nll {parts['nll']:.4f} lr {opt.param_groups[0]['lr']:.2e}")
        if time.time() - t_last > tc.checkpoint_every_s:
            save()
            t_last = time.time()
    state["epoch_rng"] = rng.bit_generator.state  # the next epoch starts from here
    return losses


def train_member(k: int, cfg: Config, train: dict, val: dict | None, log,
                 ckpt: Path | None = None, deadline: float = math.inf) -> SpectrumNet:
    """Train member ``k`` (seeded ``cfg.seed * 1000 + k``: its own init and data order).

    With ``ckpt`` the member continues from that file if it exists and checkpoints there at
    every epoch end, every ``checkpoint_every_s`` and when the session stops. ``model.finished``
    says whether it is done (all steps, or a validation plateau) or only paused.
    """
    torch.manual_seed(cfg.seed * 1000 + k)
    model = SpectrumNet(cfg.model, len(LABELS), DEFAULT_GRID.npix)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    state = load_state(ckpt, model, opt) or new_state(k, cfg, len(train["label"]))
    if state["step"]:
        log(f"member {k}: resumed at epoch {state['epoch']} step {state['step']}/{state['total']}")
    save = lambda: save_state(ckpt, state, model, opt)
    model.train()
    session_epochs = 0
    while not state["done"]:
        losses = run_epoch(k, state, model, opt, train, cfg, deadline, save, log)
        if losses is None:
            log(f"member {k}: session time budget reached at step {state['step']}/{state['total']}")
            break
        end_of_epoch(k, state, model, val, cfg, float(np.mean(losses)) if losses else None, log)
        save()
        session_epochs += 1
        if not state["done"] and 0 < cfg.train.session_epochs <= session_epochs:
            break
    save()
    if state["done"] and cfg.train.patience > 0 and state["best_model"] is not None:
        model.load_state_dict(state["best_model"])  # early stopping keeps the best epoch
    model.steps_done = state["step"]
    model.finished = state["done"]
    model.history = state["history"]
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


def _train_member_process(k: int) -> tuple[dict, int, bool, list]:
    cfg, train, val, log, run_dir, deadline = (
        _FORK_STATE[n] for n in ("cfg", "train", "val", "log", "run_dir", "deadline"))
    torch.set_num_threads(1)
    model = train_member(k, cfg, train, val, log, member_path(run_dir, k), deadline)
    return model.state_dict(), int(model.steps_done), bool(model.finished), model.history


def _members_in_parallel(cfg: Config, train: dict, val: dict, log, run_dir: Path | None,
                         deadline: float) -> list[SpectrumNet]:
    _FORK_STATE.update(cfg=cfg, train=train, val=val, log=log, run_dir=run_dir, deadline=deadline)
    try:
        with mp.get_context("fork").Pool(cfg.train.members) as pool:
            results = pool.map(_train_member_process, range(cfg.train.members))
    finally:
        _FORK_STATE.clear()
    members = []
    for sd, steps, finished, history in results:
        m = SpectrumNet(cfg.model, len(LABELS), DEFAULT_GRID.npix)
        m.load_state_dict(sd)
        m.eval()
        m.steps_done, m.finished, m.history = steps, finished, history
        members.append(m)
    return members


def train_ensemble(cfg: Config, train: dict, val: dict, log,
                   run_dir: Path | None = None) -> list[SpectrumNet]:
    """Train every member; with ``parallel_members`` one single-threaded process per member.

    Why processes: on a small CPU shared with other jobs, one 2-thread torch process loses most
    of its time at OpenMP barriers whenever one of its threads is descheduled; independent
    single-threaded members never wait for each other. Forked workers share the (read-only)
    training arrays copy-on-write. The parent must not have run torch before forking.

    With ``run_dir`` every member checkpoints under ``run_dir/members/`` and continues from
    there; ``train.time_budget_s`` is this session's limit. Raises ``Paused`` when the session
    ends before every member is done (the checkpoints are written).
    """
    t0 = time.time()
    deadline = t0 + cfg.train.time_budget_s if cfg.train.time_budget_s > 0 else math.inf
    if cfg.train.parallel_members and cfg.train.members > 1:
        members = _members_in_parallel(cfg, train, val, log, run_dir, deadline)
        log(f"{len(members)} members trained in parallel in {time.time() - t0:.0f} s")
    else:
        torch.set_num_threads(max(cfg.train.threads, 1))
        members = []
        for k in range(cfg.train.members):
            t1 = time.time()
            members.append(train_member(k, cfg, train, val, log, member_path(run_dir, k), deadline))
            log(f"member {k} session took {time.time() - t1:.0f} s")
    torch.set_num_threads(max(cfg.train.threads, 1))
    paused = [k for k, m in enumerate(members) if not m.finished]
    if paused:
        raise Paused(f"members {paused} paused at steps {[members[k].steps_done for k in paused]}")
    return members


__all__ = ["Paused", "load_checkpoint", "predict_members", "save_checkpoint", "train_ensemble"]
