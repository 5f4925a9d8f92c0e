"""A tiny spectrum-classifier ensemble (training.spectra.model) for the saliency and 2-D
convolution tests, and the float32 tolerance its gradients are held to.

Random weights and randomised BatchNorm statistics, so that folding BatchNorm into the
convolutions (the saliency graph, the Conv1d → Conv2d rewrite) is really exercised; on the
model grid with all 13 labels, the shapes the shipped classifier has.
"""

from __future__ import annotations

import torch

from service.spectra import DEFAULT_GRID
from tests.support.batchnorm import randomise_batchnorm
from training.common.float32_bounds import gradient_tol
from training.spectra.config import ModelConfig
from training.spectra.model import Ensemble, SpectrumNet

NPIX = DEFAULT_GRID.npix
K = 13


def tiny_ensemble(seed: int = 0) -> Ensemble:
    torch.manual_seed(seed)
    cfg = ModelConfig(widths=[8, 8, 12, 12], stem_channels=8, head_hidden=16)
    members = [SpectrumNet(cfg, K, NPIX).eval() for _ in range(2)]
    for m in members:
        randomise_batchnorm(m, torch.nn.BatchNorm1d)
    return Ensemble(members, temperature=0.8, z_sigma_scale=1.3).eval()


def ensemble_gradient_tol(ens: Ensemble) -> float:
    """float32 vs float64: one member's layers (members run side by side), plus the mean over
    members and the softmax's sums over the labels, forward and backward."""
    return gradient_tol(ens.members[0], [len(ens.members), K, K])
