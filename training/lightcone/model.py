"""A 21cmPIE-Net-style 3D CNN, scaled to a (1, 16, 16, 128) lightcone, with Gaussian outputs.

21cmPIE-Net (Neutsch, Heneka & Brüggen 2022) stacks 3D convolutions with batch norm and
pooling over the full (140, 140, 2350) cube, then dense layers to the parameters. Here the same
shape of network is scaled down four-fold in width and to our grid: conv blocks pool the sky
and the line of sight, then the sky axes are averaged away (the sky is statistically
homogeneous, so nothing should depend on *where* on the sky a feature is) while the
line-of-sight positions are kept and flattened: they are redshift, i.e. the history of heating
and reionisation the parameters are read from.

Heteroscedastic output: per parameter a mean μ and log σ in prior-normalised units
(θ_norm = (θ − low)/(high − low) ∈ [0, 1]); :class:`PhysicalHead` turns them into physical
units for export, with the calibration scale folded in.
"""

from __future__ import annotations

import torch
from torch import nn

from service.lightcones import LightconeGrid

from .config import ModelConfig

LOGSIG_MIN, LOGSIG_MAX = -7.0, 1.0


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, pool: tuple[int, int, int]):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.act = nn.GELU()
        self.pool = nn.MaxPool3d(pool) if pool != (1, 1, 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


def pools_for(grid: LightconeGrid, n_blocks: int) -> list[tuple[int, int, int]]:
    """Pool the sky by 2 while it is > 2 cells and the line of sight by 2 every block."""
    pools, xy, los = [], grid.n_xy, grid.n_los
    for _ in range(n_blocks):
        p_xy = 2 if xy > 2 else 1
        p_los = 2 if los > 4 else 1
        pools.append((p_xy, p_xy, p_los))
        xy, los = xy // p_xy, los // p_los
    return pools


class LightconeNet(nn.Module):
    """(N, 1, n_xy, n_xy, n_los) → (μ_norm, log σ_norm), each (N, n_params)."""

    def __init__(self, cfg: ModelConfig, grid: LightconeGrid, n_params: int):
        super().__init__()
        blocks, cin, los = [], 1, grid.n_los
        for w, pool in zip(cfg.widths, pools_for(grid, len(cfg.widths))):
            blocks.append(Block(cin, w, pool))
            cin, los = w, los // pool[2]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * los, cfg.head_hidden), nn.GELU(),
            nn.Dropout(cfg.dropout), nn.Linear(cfg.head_hidden, 2 * n_params))
        self.n_params = n_params

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).mean(dim=(2, 3))  # average the sky, keep the line of sight
        out = self.head(h)
        mu, logsig = out[:, : self.n_params], out[:, self.n_params:]
        return mu, torch.clamp(logsig, LOGSIG_MIN, LOGSIG_MAX)


class PhysicalHead(nn.Module):
    """The exported graph: cube → mean and σ in physical units (calibrated σ)."""

    def __init__(self, net: LightconeNet, low: torch.Tensor, high: torch.Tensor,
                 sigma_scale: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("low", low.float())
        self.register_buffer("width", (high - low).float())
        self.register_buffer("sigma_scale", sigma_scale.float())

    def forward(self, lightcone: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logsig = self.net(lightcone)
        mean = self.low + self.width * mu
        sigma = self.width * torch.exp(logsig) * self.sigma_scale
        return mean, sigma


OUTPUT_NAMES = ["theta_mean", "theta_sigma"]  # "mean" would clash with an op name in the graph
