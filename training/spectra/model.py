"""A small GaSNet-family residual 1D CNN and the deep ensemble that wraps it for export.

Co-designed for cheap inference (the service runs the whole ensemble on CPU) and a cheap
backward pass (saliency later):
- a strided "patchify" stem (k=8, s=4) instead of full-resolution convolutions: the first
  layer is the most expensive one in a 1D CNN over 4k pixels;
- downsampling only by strided convolutions (no max-pooling: its backward is a scatter and it
  blocks smooth saliency), ReLU (fused with Conv+BN by ONNX Runtime), BatchNorm (folded);
- the last two feature maps flattened (not globally pooled), so the heads know *where*
  features sit on the wavelength grid — which is what a redshift is.

Heads: 13 label logits (flat softmax; the contract sums labels into top classes) and the mean and
log-variance of t = ln(1+z) (heteroscedastic; ln(1+z) makes errors scale like Δz/(1+z)).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig

LOGVAR_MIN, LOGVAR_MAX = -18.0, 4.0


class DownBlock(nn.Module):
    """Residual block that halves the length: conv(k, s=2) → conv(3) plus a 1×1 strided skip."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, k, stride=2, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.skip = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=2, bias=False),
                                  nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.skip(x))


class SpectrumNet(nn.Module):
    """One ensemble member: (N, 2, npix) → (logits (N, K), t_mean (N,), t_logvar (N,))."""

    def __init__(self, cfg: ModelConfig, n_labels: int, npix: int):
        super().__init__()
        pad = (cfg.stem_kernel - cfg.stem_stride) // 2
        self.stem = nn.Sequential(
            nn.Conv1d(2, cfg.stem_channels, cfg.stem_kernel, stride=cfg.stem_stride,
                      padding=pad, bias=False),
            nn.BatchNorm1d(cfg.stem_channels),
            nn.ReLU(),
        )
        blocks, c = [], cfg.stem_channels
        for w in cfg.widths:
            blocks.append(DownBlock(c, w, cfg.kernel))
            c = w
        self.blocks = nn.Sequential(*blocks)
        with torch.no_grad():
            n_flat = sum(f.numel() for f in self.features(torch.zeros(1, 2, npix)))
        self.trunk = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(n_flat, cfg.head_hidden),
                                   nn.ReLU())
        self.cls = nn.Linear(cfg.head_hidden, n_labels)
        self.reg = nn.Linear(cfg.head_hidden, 2)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last two stages, flattened: the finer one keeps line positions for redshift."""
        h = self.stem(x)
        for block in self.blocks[:-1]:
            h = block(h)
        last = self.blocks[-1](h)
        return [h.flatten(1), last.flatten(1)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat(self.features(x), dim=1))
        r = self.reg(h)
        return self.cls(h), r[:, 0], r[:, 1].clamp(LOGVAR_MIN, LOGVAR_MAX)


class Ensemble(nn.Module):
    """The exported graph: members + temperature + redshift-σ scale → the contract outputs.

    probs     = mean_m softmax(logits_m / T)
    entropy   = H(probs)                                  (total predictive uncertainty)
    epistemic = H(probs) − mean_m H(softmax(logits_m / T)) (mutual information, ≥ 0)
    z         = exp(mean_m μ_m) − 1
    z_sigma   = s · (1+z) · sqrt(mean_m σ_m² + var_m μ_m)  (aleatoric + epistemic, delta method)
    """

    def __init__(self, members: list[SpectrumNet], temperature: float = 1.0,
                 z_sigma_scale: float = 1.0):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.register_buffer("z_sigma_scale", torch.tensor(float(z_sigma_scale)))

    def forward(self, spectrum: torch.Tensor):
        outs = [m(spectrum) for m in self.members]
        logits = torch.stack([o[0] for o in outs]) / self.temperature  # (M, N, K)
        mu = torch.stack([o[1] for o in outs])  # (M, N)
        var = torch.exp(torch.stack([o[2] for o in outs]))
        logp = torch.log_softmax(logits, dim=-1)
        p = torch.exp(logp)
        probs = p.mean(0)
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)
        member_entropy = -(p * logp).sum(-1).mean(0)
        epistemic = (entropy - member_entropy).clamp_min(0.0)
        mu_bar = mu.mean(0)
        var_t = var.mean(0) + ((mu - mu_bar) ** 2).mean(0)
        z = torch.exp(mu_bar) - 1.0
        z_sigma = self.z_sigma_scale * (1.0 + z) * torch.sqrt(var_t)
        return probs, entropy, epistemic, z, z_sigma


OUTPUT_NAMES = ["probs", "entropy", "epistemic", "z", "z_sigma"]
