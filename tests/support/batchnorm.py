"""BatchNorm layers with non-trivial statistics, for parity tests of exported graphs.

A freshly built network has running mean 0, variance 1, weight 1 and bias 0: folding such a
BatchNorm into its convolution is the identity, so an export that folded it wrongly would still
pass. Random statistics make the fold matter. Draws happen in module order, from torch's
global generator (seed it first)."""

from __future__ import annotations

import torch


def randomise_batchnorm(model: torch.nn.Module, kind: type[torch.nn.Module]) -> None:
    for mod in model.modules():
        if isinstance(mod, kind):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
