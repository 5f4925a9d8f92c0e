"""Model shapes and the ensemble's contract outputs, before any export."""

from __future__ import annotations

import torch

from training.spectra.config import ModelConfig
from training.spectra.model import Ensemble, SpectrumNet


def test_member_and_ensemble_outputs_obey_the_contract():
    torch.manual_seed(0)
    cfg = ModelConfig(widths=[8, 8, 8, 8, 8], stem_channels=8, head_hidden=16)
    members = [SpectrumNet(cfg, 13, 4076).eval() for _ in range(3)]
    assert not any(isinstance(m, torch.nn.MaxPool1d) for m in members[0].modules())
    x = torch.randn(5, 2, 4076)
    logits, mu, logvar = members[0](x)
    assert logits.shape == (5, 13) and mu.shape == (5,) and logvar.shape == (5,)
    ens = Ensemble(members, temperature=1.5, z_sigma_scale=1.2).eval()
    with torch.no_grad():
        probs, entropy, epistemic, z, z_sigma = ens(x)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    assert (entropy >= 0).all() and (epistemic >= 0).all() and (epistemic <= entropy + 1e-6).all()
    assert (z_sigma > 0).all() and (z > -1).all()


def test_one_member_has_no_epistemic_uncertainty():
    torch.manual_seed(0)
    cfg = ModelConfig(widths=[8, 8], stem_channels=8, head_hidden=16)
    ens = Ensemble([SpectrumNet(cfg, 13, 512).eval()]).eval()
    with torch.no_grad():
        _, _, epistemic, _, _ = ens(torch.randn(3, 2, 512))
    assert torch.allclose(epistemic, torch.zeros(3), atol=1e-6)
