"""Post-hoc calibration on held-out simulated spectra, folded into the exported graph.

- Temperature scaling (Guo et al. 2017): one scalar T divides every member's logits before the
  softmax; T minimises the NLL of the *ensemble-mean* probabilities on the validation split, so
  the probabilities the service returns are the calibrated ones.
- Redshift σ scale: one scalar s multiplies z_sigma so that 68.27% of validation spectra fall
  inside ±1σ (a quantile fit, robust to catastrophic redshift failures, unlike an NLL fit).
Both are plain numpy: the ensemble's raw outputs are computed once and the fits are 1-D.
"""

from __future__ import annotations

import math

import numpy as np

ONE_SIGMA = 0.6827


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    a = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=axis, keepdims=True)


def ensemble_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(M, N, K) member logits → (N, K) mean of the tempered member softmaxes."""
    return softmax(logits / temperature).mean(0)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray, lo: float = 0.2, hi: float = 10.0) -> float:
    """Golden-section search of log T minimising the ensemble NLL."""
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    f = lambda lt: nll(ensemble_probs(logits, math.exp(lt)), y)
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


def ensemble_redshift(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, N) member μ, log σ² of t = ln(1+z) → z, σ_t (total), σ_z (unscaled)."""
    mu_bar = mu.mean(0)
    var_t = np.exp(logvar).mean(0) + mu.var(0)
    z = np.expm1(mu_bar)
    sig_t = np.sqrt(var_t)
    return z, sig_t, (1 + z) * sig_t


def fit_z_sigma_scale(mu: np.ndarray, logvar: np.ndarray, z_true: np.ndarray) -> float:
    _, sig_t, _ = ensemble_redshift(mu, logvar)
    r = np.abs(np.log1p(z_true) - mu.mean(0)) / np.maximum(sig_t, 1e-12)
    return float(np.quantile(r, ONE_SIGMA))


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top prediction, equal-width confidence bins."""
    conf = probs.max(-1)
    correct = probs.argmax(-1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    total = 0.0
    for i in range(n_bins):
        sel = b == i
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)
