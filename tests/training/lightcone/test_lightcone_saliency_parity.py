"""Lightcone saliency.onnx vs PyTorch autograd.

1. The shipped v2 graph, on held-out cubes (fixtures/saliency_cubes.npz) and on synthetic
   cubes with exactly-zero ionised regions (max-pool ties): the network rebuilt from
   model.onnx's initializers reproduces model.onnx, and the ONNX gradient matches autograd
   through that network to float32 rounding — against float32 autograd on every cube, against
   float64 autograd on every cube where float32 and float64 autograd themselves agree (a
   window tied to within float32 rounding makes the max-pool gradient discontinuous there).
2. A fresh export of a small random network with randomised BatchNorm statistics (so BN
   folding is really exercised) through the shipped exporter path (dynamo + the pool-offset
   rewrite) matches float64 autograd.
Every tolerance is derived from float32 arithmetic and the network's reduction lengths
(training/common/float32_bounds.py), not from this machine's errors (another CPU's were 50x
larger and still float32 rounding).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.batchnorm import randomise_batchnorm
from training.common.float32_bounds import gradient_tol
from training.common.manifest import sha256_file
from training.common.ort import ort_session
from training.lightcone.config import load_config
from training.lightcone.export_onnx import physical_head, sky_cells, width_tol
from training.lightcone.export_saliency import (
    export_saliency,
    forward_parity,
    head_from_onnx,
    parity_inputs,
    rel_l2,
    target_rows,
    torch_gradient,
)
from training.lightcone.model import LightconeNet

REPO = Path(__file__).resolve().parents[3]
V2 = REPO / "models" / "lightcone_regressor" / "2"
CUBES = Path(__file__).with_name("fixtures") / "saliency_cubes.npz"
TINY = REPO / "training" / "lightcone" / "configs" / "lightcone_tiny.json"


@pytest.fixture(scope="module")
def v2():
    torch.set_num_threads(1)
    return head_from_onnx(V2)[1]


def grad_tol(net: LightconeNet, shape: tuple[int, ...], sides: int) -> float:
    return gradient_tol(net, [sky_cells(net, shape)], sides)


def test_manifest_entry_names_the_shipped_graph():
    m = json.loads((V2 / "manifest.json").read_text())
    entry = m["saliency"]
    assert sha256_file(V2 / entry["file"]) == entry["sha256"]
    assert sha256_file(V2 / m["file"]) == m["sha256"]  # model.onnx untouched
    assert [i["name"] for i in entry["inputs"]] == ["lightcone", "target"]


def test_rebuilt_network_is_model_onnx(v2):
    x = np.load(CUBES)["x"].astype(np.float32)
    assert forward_parity(v2, V2 / "model.onnx", x) < width_tol(v2, x)


@pytest.mark.parametrize("source", ["held-out", "synthetic"])
def test_shipped_gradient_matches_autograd(v2, source):
    x = (np.load(CUBES)["x"].astype(np.float32) if source == "held-out"
         else parity_inputs((1, 16, 16, 128), 4, seed=3))
    one, two = grad_tol(v2.net, x.shape[1:], 1), grad_tol(v2.net, x.shape[1:], 2)
    sess = ort_session(V2 / "saliency.onnx")
    p = int(v2.width.shape[0])
    for sigma in (False, True):
        t = target_rows(p, [(i % p, sigma) for i in range(len(x))])
        g = sess.run(["saliency"], {"lightcone": x, "target": t})[0]
        ref64, ref32 = torch_gradient(v2, x, t), torch_gradient(v2, x, t, torch.float32)
        # a max-pool window tied to within float32 rounding: float32 (PyTorch's own included)
        # and float64 pick different winners, so float64 is the reference only on the cubes
        # where float32 autograd agrees with it (all but the one such held-out cube)
        well_conditioned = rel_l2(ref32, ref64) <= one
        assert well_conditioned.sum() >= len(x) - 1, rel_l2(ref32, ref64)
        assert rel_l2(g, ref32).max() < two, (rel_l2(g, ref32), two)
        assert rel_l2(g, ref64)[well_conditioned].max() < one, (rel_l2(g, ref64), one)


def test_every_parameter_and_a_mixed_target(v2):
    x = parity_inputs((1, 16, 16, 128), 2, seed=5)
    tol = grad_tol(v2.net, x.shape[1:], 2)  # ONNX Runtime vs PyTorch, both float32
    sess = ort_session(V2 / "saliency.onnx")
    for k in range(5):
        t = target_rows(5, [(k, False), (k, True)])
        g = sess.run(["saliency"], {"lightcone": x, "target": t})[0]
        ref = torch_gradient(v2, x, t, torch.float32)
        assert rel_l2(g, ref).max() < tol
    t = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)  # any linear functional
    g, mean, sigma = sess.run(None, {"lightcone": x, "target": t})
    assert rel_l2(g, torch_gradient(v2, x, t, torch.float32)).max() < tol
    with torch.no_grad():
        m_ref, s_ref = v2(torch.from_numpy(x))
    width, in_widths = v2.width.numpy(), width_tol(v2, x)
    assert (np.abs(mean - m_ref.numpy()) / width).max() < in_widths
    assert (np.abs(sigma - s_ref.numpy()) / width).max() < in_widths


def test_fresh_export_with_batchnorm(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(TINY)
    grid = cfg.grid.model_grid()
    net = LightconeNet(cfg.model, grid, len(cfg.param_names)).eval()
    randomise_batchnorm(net, torch.nn.BatchNorm3d)
    head = physical_head(net, cfg, np.full(5, 1.3, np.float32))
    x = parity_inputs(grid.shape, 4, seed=1)
    entry = export_saliency(head, tmp_path, grid.shape, x)
    one, two = grad_tol(net, grid.shape, 1), grad_tol(net, grid.shape, 2)
    for kind in ("mean", "sigma"):
        assert entry["parity"]["max_rel_l2"][kind]["vs_float32_autograd"] < two
        assert entry["parity"]["max_rel_l2"][kind]["vs_float64_autograd"] < one
    import onnx

    ops = [n.op_type for n in onnx.load(str(tmp_path / "saliency.onnx")).graph.node]
    # the kernel-1 MaxPool that only computed index offsets is gone: one MaxPool per pool
    assert ops.count("MaxPool") == sum(1 for b in net.features
                                       if isinstance(b.pool, torch.nn.MaxPool3d))


def test_command_on_a_freshly_exported_model(tmp_path):
    """What `specula train saliency --model-dir models/lightcone_regressor/<v>` does to a newly
    trained version: rebuild from its model.onnx (BN-trained, so folded there), check, export,
    add the manifest entry; model.onnx untouched."""
    from training.cli import main
    from training.lightcone.export_onnx import export

    torch.manual_seed(1)
    cfg = load_config(TINY)
    grid = cfg.grid.model_grid()
    net = LightconeNet(cfg.model, grid, len(cfg.param_names)).eval()
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.running_var.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-0.2, 0.2)
    vdir = tmp_path / "lightcone_regressor" / "1"
    export(net, cfg, np.full(5, 1.1, np.float32), vdir,
           parity_x=parity_inputs(grid.shape, 2, seed=2))
    before = sha256_file(vdir / "model.onnx")
    assert main(["saliency", "--model-dir", str(vdir), "--parity-n", "3"]) == 0
    m = json.loads((vdir / "manifest.json").read_text())
    assert sha256_file(vdir / "model.onnx") == before == m["sha256"]
    entry = m["saliency"]
    assert sha256_file(vdir / "saliency.onnx") == entry["sha256"]
    fwd = entry["forward_parity_vs_model_onnx"]
    x = parity_inputs(grid.shape, 3)  # the command's own check cubes (--parity-n 3)
    assert fwd["tolerance_over_prior_width"] == pytest.approx(width_tol(head_from_onnx(vdir)[1], x),
                                                              rel=1e-3)
    assert fwd["max_diff_over_prior_width"] < fwd["tolerance_over_prior_width"]
    assert entry["parity"]["max_rel_l2"]["mean"]["vs_float32_autograd"] < grad_tol(
        net, grid.shape, 2)
    assert entry["weights_from"].startswith("model.onnx initializers")
