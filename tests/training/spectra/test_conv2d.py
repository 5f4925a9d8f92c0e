"""training/spectra/conv2d.py: 1-D Convs rewritten as 2-D ones give the same numbers, and the pass
refuses graphs it cannot prove safe; the shipped version 2 is version 1 rewritten."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from service.spectra import Source, preprocess, read_spectra
from tests.support.tiny_classifier import export_onnx
from tests.support.tiny_ensemble import NPIX, K, ensemble_gradient_tol, tiny_ensemble
from training.common.manifest import sha256_file
from training.spectra.conv2d import (
    Unsupported,
    compare,
    conv1d_as_conv2d,
    derive,
    relative_diffs,
    rewrite_tolerance,
)
from training.spectra.export_onnx import export_graph, output_tolerances, run_onnx, run_torch
from training.spectra.export_saliency import export_saliency, parity_inputs

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "models" / "spectrum_classifier"


def conv_kernels(model: onnx.ModelProto) -> list[list[int]]:
    return [helper.get_attribute_value(a) for n in model.graph.node if n.op_type == "Conv"
            for a in n.attribute if a.name == "kernel_shape"]


def test_exported_ensemble_is_2d_and_matches_pytorch(tmp_path):
    """export_onnx writes the rewritten graph; it still matches the PyTorch ensemble to
    float32 rounding on both sides (export_onnx.output_tolerances)."""
    ens = tiny_ensemble(3)
    path = tmp_path / "model.onnx"
    export_graph(ens, path, NPIX)
    kernels = conv_kernels(onnx.load(path))
    assert kernels and all(len(k) == 2 and k[0] == 1 for k in kernels)
    x = np.random.default_rng(0).normal(size=(5, 2, NPIX)).astype(np.float32)
    got, want, tol = run_onnx(path, x), run_torch(ens, x), output_tolerances(ens, x)
    for name, w in want.items():
        err = np.abs(got[name] - w)
        assert (err <= tol[name]).all(), (name, float(np.max(err / tol[name])))


def _conv_then(op: str, other: np.ndarray) -> onnx.ModelProto:
    """x (N, 2, 16) → Conv(2→3, k=3, pad 1) → ``op`` with a constant ``other`` → (N, 48)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 2, 3))
                                .astype(np.float32), "w")
    c = numpy_helper.from_array(other.astype(np.float32), "c")
    shape = numpy_helper.from_array(np.array([-1, 48], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[3], pads=[1, 1]),
             helper.make_node(op, ["h", "c"], ["hc"]),
             helper.make_node("Reshape", ["hc", "shape"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 48])], [w, c, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_refuses_what_it_cannot_prove_safe():
    # a per-channel bias shaped (C, 1) broadcasts differently against (N, C, 1, L)
    with pytest.raises(Unsupported, match="non-scalar"):
        conv1d_as_conv2d(_conv_then("Add", np.ones((3, 1))))
    # pooling after the convolution (the tiny test classifier exported by torch)
    with pytest.raises(Unsupported, match="AveragePool"):
        conv1d_as_conv2d(onnx.load_from_string(export_onnx(0, 4076)))
    # a convolution weight another op reads too would change under that op
    shared = _conv_then("Mul", np.array(2.0))
    shared.graph.node.append(helper.make_node("Identity", ["w"], ["w_out"]))
    shared.graph.output.append(helper.make_tensor_value_info("w_out", TensorProto.FLOAT,
                                                             [3, 2, 3]))
    with pytest.raises(Unsupported, match="weights also used"):
        conv1d_as_conv2d(shared)
    # a scalar is fine, and the result is the same
    model = _conv_then("Mul", np.array(2.0))
    x = np.random.default_rng(1).normal(size=(4, 2, 16)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    rewritten = conv1d_as_conv2d(model)
    assert conv_kernels(rewritten) == [[1, 3]]
    np.testing.assert_allclose(run(rewritten), run(model), rtol=1e-6, atol=1e-6)


def test_derive_writes_a_new_version_with_checksum_parity_and_provenance(tmp_path):
    src = tmp_path / "m" / "1"
    src.mkdir(parents=True)
    buf = io.BytesIO()
    torch.onnx.export(tiny_ensemble(4), (torch.zeros(2, 2, NPIX),), buf,
                      input_names=["spectrum"],
                      output_names=["probs", "entropy", "epistemic", "z", "z_sigma"],
                      dynamic_axes={"spectrum": {0: "N"}}, dynamo=False)
    (src / "model.onnx").write_bytes(buf.getvalue())
    (src / "saliency.onnx").write_bytes(b"copied as is")
    (src / "manifest.json").write_text(json.dumps(
        {"name": "m", "version": 1, "file": "model.onnx",
         "sha256": sha256_file(src / "model.onnx"), "metrics": {"accuracy_top": 0.9}}))
    x = np.random.default_rng(2).normal(size=(8, 2, NPIX)).astype(np.float32)
    ens = tiny_ensemble(4)
    m = derive(src, tmp_path / "m" / "2", x)
    dst = tmp_path / "m" / "2"
    assert m["version"] == 2 and m["sha256"] == sha256_file(dst / "model.onnx")
    assert (dst / "saliency.onnx").read_bytes() == b"copied as is"
    assert m["training"]["derived_from"]["version"] == 1
    # two ORT graphs with differently ordered sums: float32 rounding on both sides, bounded
    # per output from the PyTorch ensemble both were exported from
    tol = output_tolerances(ens, x)
    for name, diff in m["parity"]["against_version"]["per_output"].items():
        assert diff <= tol[name].max(), name
    parity = m["parity"]["against_version"]
    assert parity["max_rel_diff"] <= parity["tolerance"]
    assert m["metrics"]["accuracy_top"] == 0.9 and m["metrics"]["onnx_spectra_per_s"] > 0
    assert json.loads((dst / "manifest.json").read_text()) == m


def test_shipped_version_2_is_version_1_rewritten(sdss_spec_path):
    v1 = json.loads((SHIPPED / "1" / "manifest.json").read_text())
    v2 = json.loads((SHIPPED / "2" / "manifest.json").read_text())
    assert v2["training"]["derived_from"] == {**v2["training"]["derived_from"],
                                              "version": 1, "sha256": v1["sha256"]}
    assert v2["sha256"] == sha256_file(SHIPPED / "2" / "model.onnx")
    assert {k: v2[k] for k in ("labels", "grid", "preprocess_version")} == \
        {k: v1[k] for k in ("labels", "grid", "preprocess_version")}
    # the saliency graph was rewritten too (new checksum), the introspection graph copied
    sal1, sal2 = v1["saliency"], v2["saliency"]
    assert {k: v for k, v in sal2.items() if k != "sha256"} == \
        {k: v for k, v in sal1.items() if k != "sha256"}
    assert sal2["sha256"] == sha256_file(SHIPPED / "2" / "saliency.onnx") != sal1["sha256"]
    assert sal2["introspect"]["sha256"] == sha256_file(SHIPPED / "2" / "introspect.onnx")
    x = preprocess(read_spectra(Source.from_path(sdss_spec_path))[1][0]).x[None]
    # the same weights, differently ordered sums: float32 rounding on both sides, bounded
    # from each graph's reductions and head sizes (no checkpoint ships to bound it per output)
    for graph in ("model.onnx", "saliency.onnx"):
        tol = rewrite_tolerance(SHIPPED / "1" / graph, x)
        rel = relative_diffs(compare(SHIPPED / "1" / graph, SHIPPED / "2" / graph, x))
        assert max(rel.values()) <= tol, (graph, rel, tol)
    kernels = conv_kernels(onnx.load(SHIPPED / "2" / "saliency.onnx"))
    assert kernels and all(len(k) == 2 for k in kernels)


def test_exported_saliency_graph_is_2d_and_still_the_exact_gradient(tmp_path):
    """export_saliency applies the pass too (to the dynamo export, the shipped path: the
    TorchScript exporter's Shape ops on the trunk make the pass keep that graph 1-D); its
    parity check against float64 autograd then holds for the rewritten graph."""
    ens = tiny_ensemble(5)
    entry = export_saliency(ens, tmp_path, NPIX, K, parity_x=parity_inputs(NPIX, 2))
    kernels = conv_kernels(onnx.load(tmp_path / "saliency.onnx"))
    assert kernels and all(len(k) == 2 and k[0] == 1 for k in kernels)
    assert entry["sha256"] == sha256_file(tmp_path / "saliency.onnx")
    assert max(entry["parity"]["max_rel_l2"].values()) < ensemble_gradient_tol(ens)
