"""saliency.onnx vs PyTorch autograd, and introspect.onnx vs the PyTorch layers.

A tiny ensemble with random weights and randomised BatchNorm statistics (so folding BN is
really exercised), on the model grid. Three levels:
1. the hand-written backward module in float64 equals autograd to ~1e-12 (it is the exact
   vector-Jacobian product, not an approximation);
2. the exported ONNX graph (float32, ONNX Runtime) agrees with float64 autograd to float32
   rounding (relative L2 per spectrum, bound derived in float32_bounds.py), for label,
   top-class and redshift targets;
3. the forward outputs the graph returns are the ensemble's, and the introspection graph
   returns the first-layer weights and each stage's activations.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.support.tiny_ensemble import NPIX, K, ensemble_gradient_tol, tiny_ensemble
from training.common.float32_bounds import reduction_lengths, rel_tol
from training.common.ort import ort_session
from training.common.saliency import add_to_manifest
from training.spectra.export_onnx import output_tolerances, sha256_file
from training.spectra.export_saliency import (
    IntrospectGraph,
    SaliencyGraph,
    export_saliency,
    layer_names,
    parity_inputs,
    target_matrix,
    torch_gradient,
)
from training.spectra.model import OUTPUT_NAMES


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    return (np.linalg.norm((a - b).reshape(n, -1), axis=1)
            / np.linalg.norm(b.reshape(n, -1), axis=1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    ens = tiny_ensemble()
    d = tmp_path_factory.mktemp("saliency")
    entry = export_saliency(ens, d, NPIX, K, parity_x=parity_inputs(NPIX, 3))
    return ens, d, entry


def test_explicit_backward_is_the_exact_vjp_in_float64():
    ens = tiny_ensemble(1).double()
    sal = SaliencyGraph(ens, NPIX).double()
    x = parity_inputs(NPIX, 3, seed=1).astype(np.float64)
    t = target_matrix(K, [0, 7, "z"]).astype(np.float64)
    t[0, 1] = 0.5  # a linear combination: label 0 + half of label 1
    with torch.no_grad():
        g = sal(torch.from_numpy(x), torch.from_numpy(t))[0].numpy()
    ref = torch_gradient(ens, x, t)
    assert rel_l2(g, ref).max() < 1e-10


@pytest.mark.slow
def test_onnx_gradient_matches_autograd(exported):
    ens, d, entry = exported
    sess = ort_session(d / "saliency.onnx")
    x = parity_inputs(NPIX, 4, seed=2)
    membership = np.zeros(K, dtype=np.float32)
    membership[2:] = 1.0  # a top class = the sum of its labels (here the 11 STAR labels)
    for t in (target_matrix(K, [0, 1, 5, 12]), target_matrix(K, ["z"] * 4),
              np.concatenate([np.tile(membership, (4, 1)), np.zeros((4, 1), np.float32)], 1)):
        g = sess.run(["saliency"], {"spectrum": x, "target": t})[0]
        err = rel_l2(g, torch_gradient(ens, x, t))
        assert err.max() < ensemble_gradient_tol(ens), err
    assert max(entry["parity"]["max_rel_l2"].values()) < ensemble_gradient_tol(ens)


@pytest.mark.slow
def test_onnx_returns_the_prediction_it_explains(exported):
    ens, d, _ = exported
    sess = ort_session(d / "saliency.onnx")
    x = parity_inputs(NPIX, 5, seed=3)
    out = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"spectrum": x, "target": target_matrix(K, [0] * 5)})))
    assert out["saliency"].shape == x.shape  # dynamic batch: 5 rows through a graph traced at 2
    with torch.no_grad():
        ref = dict(zip(OUTPUT_NAMES, ens(torch.from_numpy(x))))
    tol = output_tolerances(ens, x)  # ORT vs PyTorch, float32 rounding propagated per output
    for name in ("probs", "z", "z_sigma"):
        err = np.abs(out[name] - ref[name].numpy())
        assert (err <= tol[name]).all(), (name, float(np.max(err / tol[name])))


@pytest.mark.slow
def test_introspection_graph_returns_filters_and_activations(exported):
    ens, d, entry = exported
    sess = ort_session(d / "introspect.onnx")
    names = [o.name for o in sess.get_outputs()]
    assert names == ["filters"] + layer_names(len(ens.members[0].blocks))
    x = parity_inputs(NPIX, 2, seed=4)
    out = dict(zip(names, sess.run(None, {"spectrum": x})))
    weights = np.stack([m.stem[0].weight.detach().numpy() for m in ens.members])
    np.testing.assert_allclose(out["filters"], weights, rtol=1e-6)
    with torch.no_grad():
        ref = IntrospectGraph(ens)(torch.from_numpy(x))
    member = ens.members[0]
    stages = [member.stem, *member.blocks]
    for k, (name, r) in enumerate(zip(names[1:], ref[1:])):
        # ORT vs PyTorch through the stages up to this one, relative to each member's
        # activation size per spectrum (float32_bounds: the bound is on the layer's output
        # vector, and ReLU only zeroes elements)
        tol = rel_tol([n for s in stages[:k + 1] for n in reduction_lengths(s)[0]], sides=2)
        size = np.abs(r.numpy()).max(axis=(2, 3), keepdims=True)
        assert (np.abs(out[name] - r.numpy()) <= tol * size).all(), name
        assert (out[name] >= 0).all()  # post-ReLU
    layers = {lay["name"]: lay for lay in entry["introspect"]["layers"]}
    assert out["block1"].shape[2:] == (layers["block1"]["channels"], layers["block1"]["length"])


@pytest.mark.slow
def test_manifest_entry_is_added_in_place_and_refuses_a_stale_model(exported, tmp_path):
    _, d, entry = exported
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model")
    manifest = {"name": "m", "version": 1, "file": "model.onnx", "sha256": sha256_file(model)}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    updated = add_to_manifest(tmp_path, entry)
    assert updated["saliency"]["sha256"] == sha256_file(d / "saliency.onnx")
    assert json.loads((tmp_path / "manifest.json").read_text())["sha256"] == manifest["sha256"]
    model.write_bytes(b"re-shipped")
    with pytest.raises(RuntimeError, match="stale"):
        add_to_manifest(tmp_path, entry)
