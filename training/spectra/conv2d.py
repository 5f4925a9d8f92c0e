"""Rewrite a graph's 1-D convolutions as 2-D ones over (N, C, 1, L): same weights, same
numbers, about twice the speed in ONNX Runtime on CPU.

Why: ORT's CPU provider runs 2-D convolutions through MLAS's blocked (NCHWc) kernels, while
1-D ones take a slower generic path. On the shipped classifier, same weights, alternated
runs with one thread: 1,026 → 2,075 spectra/s at batch 128, 625 → 1,131 at batch 1, with
every output within 1e-6 of the 1-D graph's (docs/training.md). PyTorch's exporter writes
``nn.Conv1d`` as a 1-D ONNX Conv, so the rewrite is a pass on the exported graph rather than a
change to the model code, and training and checkpoints stay 1-D. ``derive`` also rewrites a
version's saliency graph (~1.4x there); the introspection graph stacks layer activations in a
way the pass refuses, and is copied.

The pass is deliberately narrow. It unsqueezes each 3-D graph input that feeds a
convolution once, gives every Conv a
``(O, I, 1, k)`` kernel, and then follows the 4-D tensors: only elementwise ops between two
such tensors (or a tensor and a scalar) and a ``Reshape`` to ``(-1, K)`` or a ``Flatten``
from axis 1 (the flatten before the heads, whose element order is the same in 3-D and 4-D)
may consume them. The saliency graph's backward pass also needs ``ConvTranspose`` (rewritten
like ``Conv``) and a ``Reshape`` of a flat gradient to ``(N, C, L)``, which becomes
``(N, C, 1, L)``; an output that ends 4-D is squeezed back to its declared shape. Anything
else (a bias shaped ``(C, 1)``, a pooling op, a transpose) raises :class:`Unsupported`, and
the caller keeps the 1-D graph. Callers also compare outputs numerically (``export_onnx``'s
parity check, ``derive``'s below).

    python -m training.spectra.conv2d models/spectrum_classifier/1 models/spectrum_classifier/2
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ..common.float32_bounds import onnx_reduction_lengths, rel_tol
from ..common.manifest import sha256_file
from .measures import onnx_throughput
from .model import OUTPUT_NAMES

ELEMENTWISE = {"Relu", "Add", "Sub", "Mul", "Div", "Clip", "Sigmoid", "Tanh", "LeakyRelu",
               "Identity"}
CONVS = {"Conv", "ConvTranspose"}
INPUT_4D = "as2d"


class Unsupported(ValueError):
    """The graph uses a 1-D tensor in a way the rewrite does not prove safe."""


def _scalar_names(graph: onnx.GraphProto) -> set[str]:
    out = {i.name for i in graph.initializer if int(np.prod(i.dims)) <= 1}
    for n in graph.node:
        value = n.attribute[0] if n.op_type == "Constant" and n.attribute else None
        if value is not None and value.type == onnx.AttributeProto.TENSOR \
                and int(np.prod(value.t.dims)) <= 1:
            out.add(n.output[0])
    return out


def _constant(inits: dict[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    return numpy_helper.to_array(inits[name]) if name in inits else None


def _flatten_shape(inits: dict[str, onnx.TensorProto], name: str) -> bool:
    """Whether ``name`` is a constant shape ``[-1, K]`` (or ``[0, -1]``)."""
    shape = _constant(inits, name)
    return shape is not None and shape.shape == (2,) and (
        shape[0] in (-1, 0) or shape[1] == -1)


def conv1d_as_conv2d(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose 1-D Convs (and ConvTransposes) are 2-D; raises
    :class:`Unsupported`. Graph inputs of rank 3 that feed a convolution get a 4-D twin; a
    graph output that ends up 4-D is squeezed back, so the contract does not change."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inputs_3d = {i.name for i in g.input if len(i.type.tensor_type.shape.dim) == 3}
    inits = {i.name: i for i in g.initializer}
    scalars = _scalar_names(g)
    twins: dict[str, str] = {}  # a 3-D graph input → its (N, C, 1, L) twin
    four_d: set[str] = set()
    converted: set[str] = set()
    added: list[onnx.TensorProto] = []
    replaced: set[str] = set()  # 3-D reshape targets, dropped below once nothing uses them
    for n in g.node:
        if n.op_type in CONVS and n.input[0] in inputs_3d:
            n.input[0] = twins.setdefault(n.input[0], f"{n.input[0]}_{INPUT_4D}")
            four_d.add(n.input[0])
        touched = [i for i in n.input if i in four_d]
        if n.op_type in CONVS:
            if n.input[0] not in four_d or n.input[1] not in inits:
                raise Unsupported(f"{n.op_type} {n.name}: input not 1-D-trunk or weight not "
                                  "constant")
            _to_2d(n, inits[n.input[1]], converted)
            four_d.update(n.output)
        elif n.op_type == "Reshape" and not touched:
            target = _constant(inits, n.input[1])
            if target is not None and target.shape == (3,):
                # a flat gradient back to (N, C, L), as the saliency graph's backward pass
                # does: to (N, C, 1, L) instead, and follow it like any other trunk tensor
                shape = numpy_helper.from_array(np.array([target[0], target[1], 1, target[2]],
                                                         np.int64), f"{n.name}_{INPUT_4D}_shape")
                added.append(shape)
                replaced.add(n.input[1])
                n.input[1] = shape.name
                four_d.update(n.output)
        elif not touched:
            continue
        elif n.op_type in ELEMENTWISE:
            others = [i for i in n.input if i and i not in four_d]
            if any(i not in scalars for i in others):
                raise Unsupported(f"{n.op_type} {n.name} mixes a trunk tensor with a non-scalar")
            four_d.update(n.output)
        elif n.op_type == "Reshape" and _flatten_shape(inits, n.input[1]):
            continue  # (N, C, 1, L) → (N, C·L): the same elements in the same order
        elif n.op_type == "Flatten" and all(
                helper.get_attribute_value(a) == 1 for a in n.attribute if a.name == "axis"):
            continue  # the same (N, C·L), as the legacy exporter writes it
        else:
            raise Unsupported(f"{n.op_type} {n.name} consumes a trunk tensor")
    if not converted:
        raise Unsupported("no Conv found")
    shared = {i for n in g.node if n.op_type not in CONVS for i in n.input} & converted
    if shared:
        raise Unsupported(f"convolution weights also used elsewhere: {sorted(shared)[:3]}")
    g.initializer.extend(added)
    axes = numpy_helper.from_array(np.array([2], np.int64), f"{INPUT_4D}_axes")
    g.initializer.append(axes)
    for out in g.output:
        if out.name in four_d:  # back to (N, C, L) under the output's own name
            inner = f"{out.name}_{INPUT_4D}"
            for n in g.node:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            g.node.append(helper.make_node("Squeeze", [inner, axes.name], [out.name],
                                           name=f"{out.name}_{INPUT_4D}_squeeze"))
    for source, twin in twins.items():
        g.node.insert(0, helper.make_node("Unsqueeze", [source, axes.name], [twin],
                                          name=f"{twin}_unsqueeze"))
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name not in replaced or i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.value_info[:]  # 3-D intermediate shapes no longer hold; ORT infers them again
    onnx.checker.check_model(model)
    return model


def rewrite_in_place(path: Path) -> bool:
    """Rewrite the graph file at ``path`` if the pass allows (exports call this); otherwise
    leave it 1-D, warn, and return False. The callers' parity checks then run on the file."""
    try:
        onnx.save(conv1d_as_conv2d(onnx.load(path)), path)
    except Unsupported as exc:
        warnings.warn(f"{path.name}: kept the 1-D graph: {exc}", stacklevel=2)
        return False
    return True


def _to_2d(node: onnx.NodeProto, weight: onnx.TensorProto, converted: set[str]) -> None:
    if weight.name not in converted:
        w = numpy_helper.to_array(weight)
        if w.ndim != 3:
            raise Unsupported(f"Conv {node.name}: kernel of rank {w.ndim}")
        weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w[:, :, None, :]),
                                                weight.name))
        converted.add(weight.name)
    attrs = []
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.name in ("kernel_shape", "strides", "dilations"):
            attrs.append(helper.make_attribute(a.name, [1, *v]))
        elif a.name == "pads":
            attrs.append(helper.make_attribute("pads", [0, v[0], 0, v[1]]))
        elif a.name in ("output_padding", "output_shape"):
            attrs.append(helper.make_attribute(a.name, [0 if a.name == "output_padding" else 1,
                                                        *v]))
        elif a.name == "auto_pad" and v not in (b"NOTSET", "NOTSET"):
            raise Unsupported(f"Conv {node.name}: auto_pad {v!r}")
        else:
            attrs.append(a)
    del node.attribute[:]
    node.attribute.extend(attrs)


def compare(a: Path | bytes, b: Path | bytes, x: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per output of two graphs with the same contract: (max |a − b|, max |a|), on ``x`` as
    the ``spectrum`` input (other inputs, e.g. the saliency graph's ``target``: seeded
    noise). The second number scales the first: saliency maps are small numbers."""
    def session(m):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        return ort.InferenceSession(m if isinstance(m, bytes) else str(m), so,
                                    providers=["CPUExecutionProvider"])

    sa, sb = session(a), session(b)
    rng = np.random.default_rng(0)
    feeds = {i.name: x if i.name == "spectrum" else rng.normal(
        size=[len(x), *i.shape[1:]]).astype(np.float32) for i in sa.get_inputs()}
    names = [o.name for o in sa.get_outputs()]
    ra, rb = sa.run(names, feeds), sb.run(names, feeds)
    return {k: (float(np.max(np.abs(u - v))), float(np.max(np.abs(u))))
            for k, u, v in zip(names, ra, rb)}


def relative_diffs(cmp: dict[str, tuple[float, float]]) -> dict[str, float]:
    """:func:`compare`'s differences over the size their rounding errors scale with: the
    contract outputs' (probs, entropy, epistemic, z, z_sigma) with 1 + the largest of them
    (errors go as 1 + H and 1 + z, export_onnx.output_tolerances; epistemic is a difference
    of entropies), any other output's (saliency maps, activations) with its own size."""
    contract = 1.0 + max((scale for k, (_, scale) in cmp.items() if k in OUTPUT_NAMES),
                         default=0.0)
    return {k: d / (contract if k in OUTPUT_NAMES else max(scale, 1e-30))
            for k, (d, scale) in cmp.items()}


def rewrite_tolerance(path: Path, x: np.ndarray) -> float:
    """The :func:`relative_diffs` float32 rounding allows between the graph at ``path`` and
    any re-ordering of its sums (the rewrite's other kernels), on ``x``.

    rel_tol along the graph's heaviest chain of Conv/Gemm/MatMul, both sides
    (training/common/float32_bounds.py; a saliency graph's backward pass included), times the
    heads' gain: each head's error is relative to its raw outputs' size A = max(1, |softmax inputs|, |Gemm outputs|)
    (logits/T, μ and log σ², up to ~20 for a trained classifier), and the outputs built on
    them gain up to 4x more (epistemic: 4δ_l·H; z_sigma: (1.5 + 2s(1+z)/z_sigma)·δ_r, with
    1 + z in the scale; export_onnx.output_tolerances)."""
    model = onnx.load(path)
    g = model.graph
    probes = [n.input[0] for n in g.node if n.op_type in ("Softmax", "LogSoftmax")] + \
        [n.output[0] for n in g.node if n.op_type == "Gemm"]
    known = {o.name for o in g.output}
    g.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                    for name in dict.fromkeys(probes) if name not in known)
    sizes = [scale for _, scale in compare(model.SerializeToString(), model.SerializeToString(),
                                           x).values()][len(known):]
    return 4.0 * max(1.0, *sizes) * rel_tol(onnx_reduction_lengths(model), sides=2)


def max_abs_diff(a: Path | bytes, b: Path | bytes, x: np.ndarray) -> dict[str, float]:
    """Max |a − b| per output (see :func:`compare`)."""
    return {k: d for k, (d, _) in compare(a, b, x).items()}


def throughput(src: Path, dst: Path, x: np.ndarray, rounds: int = 5) -> dict:
    """ORT CPU spectra/s of both graphs, alternated (this machine's speed drifts), with the
    evaluation's own timer: the new version's ``onnx_spectra_per_s`` and the source's in the
    same run, so the two can be compared."""
    runs: dict[str, list[float]] = {"src": [], "dst": []}
    for _ in range(rounds):
        for key, path in (("src", src), ("dst", dst)):
            t = onnx_throughput(path, x, batch=min(256, len(x)), repeats=5)
            runs[key].append(t["spectra_per_s_median"])
    src_rate, dst_rate = (float(np.median(runs[k])) for k in ("src", "dst"))
    return {"onnx_spectra_per_s": dst_rate,
            "onnx_spectra_per_s_same_run": {"source_version": src_rate, "this_version": dst_rate,
                                            "speedup": dst_rate / src_rate, "batch": t["batch"],
                                            "threads": t["threads"], "rounds": rounds}}


def derive(src: Path, dst: Path, x: np.ndarray) -> dict:
    """A new model version in ``dst``: ``src``'s graph rewritten, its other files copied, its
    manifest with the new version, checksum, parity against ``src`` (within
    :func:`rewrite_tolerance`, which is recorded) and the provenance."""
    manifest = json.loads((src / "manifest.json").read_text())
    rewritten = conv1d_as_conv2d(onnx.load(src / manifest["file"]))
    dst.mkdir(parents=True, exist_ok=False)
    out = dst / "model.onnx"
    onnx.save(rewritten, out)
    cmp = compare(src / manifest["file"], out, x)
    diffs = {k: d for k, (d, _) in cmp.items()}
    rel, tolerance = max(relative_diffs(cmp).values()), rewrite_tolerance(src / manifest["file"], x)
    if rel > tolerance:
        shutil.rmtree(dst)
        raise ValueError(f"rewritten graph differs from {src} by {diffs} ({rel:.1e} of the "
                         f"outputs' size; float32 rounding allows {tolerance:.1e})")
    extras = _rewrite_extras(src, dst, manifest, x)
    version = int(dst.name)
    manifest.update(version=version, file="model.onnx", sha256=sha256_file(out))
    manifest["metrics"] = {**manifest.get("metrics", {}), **throughput(src / manifest["file"],
                                                                       out, x)}
    manifest["parity"] = {**manifest.get("parity", {}), "against_version": {
        "version": int(src.name), "max_abs_diff": max(diffs.values()), "per_output": diffs,
        "max_rel_diff": rel, "tolerance": tolerance, "n_spectra": len(x),
        "other_graphs": extras}}
    manifest["training"] = {**manifest.get("training", {}), "derived_from": {
        "version": int(src.name), "sha256": json.loads(
            (src / "manifest.json").read_text())["sha256"],
        "rewrite": "training/spectra/conv2d.py: 1-D Convs as 2-D over (N, C, 1, L), same weights",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (dst / "report.md").write_text(report(manifest, int(src.name)))
    return manifest


def _rewrite_extras(src: Path, dst: Path, manifest: dict, x: np.ndarray) -> dict[str, dict]:
    """The version's other graphs (saliency.onnx, introspect.onnx): rewritten too where the
    pass allows and the outputs agree to float32 rounding (:func:`rewrite_tolerance`),
    else copied as they are.
    Their manifest entries get the new checksums; what happened to each is returned."""
    entries = {}
    sal = manifest.get("saliency") or {}
    for entry in (sal, sal.get("introspect") or {}):
        if entry.get("file"):
            entries[entry["file"]] = entry
    done: dict[str, dict] = {}
    for f in sorted(src.iterdir()):
        if f.suffix != ".onnx" or f.name == manifest["file"]:
            continue
        out = dst / f.name
        try:
            try:
                graph = onnx.load(f)
            except Exception as exc:  # not ours to judge: copied; the service checks it
                raise Unsupported(f"not parsed: {type(exc).__name__}") from exc
            onnx.save(conv1d_as_conv2d(graph), out)
            rel = max(relative_diffs(compare(f, out, x[:16])).values())
            tolerance = rewrite_tolerance(f, x[:16])
            if rel > tolerance:
                raise Unsupported(f"outputs differ by {rel:.1e} of their size (float32 "
                                  f"rounding allows {tolerance:.1e})")
            done[f.name] = {"rewritten": True, "max_rel_diff": rel, "tolerance": tolerance}
        except Unsupported as exc:
            shutil.copy2(f, out)
            done[f.name] = {"rewritten": False, "why": str(exc)}
        if f.name in entries:
            entries[f.name]["sha256"] = sha256_file(out)
    return done


def report(manifest: dict, source: int) -> str:
    """The new version's report: what it is, and where its evaluation lives (same weights)."""
    p = manifest["parity"]["against_version"]
    t = manifest["metrics"]["onnx_spectra_per_s_same_run"]
    return (f"# {manifest['name']} v{manifest['version']}\n\n"
            f"Version {source}'s graph with its 1-D convolutions rewritten as 2-D ones over "
            f"(N, C, 1, L) by `training/spectra/conv2d.py`: the same weights, labels, grid and "
            f"preprocessing. Its evaluation is version {source}'s, in `../{source}/report.md`; "
            f"the numbers below are what changed.\n\n"
            f"- outputs against version {source}: max |difference| {p['max_abs_diff']:.1e} over "
            f"{p['n_spectra']} inputs ({', '.join(f'{k} {v:.1e}' for k, v in p['per_output'].items())})\n"
            + "".join(f"- {name}: " + (f"rewritten too, outputs within {e['max_rel_diff']:.1e} of "
                                       f"their size" if e["rewritten"] else
                                       f"copied unchanged ({e['why']})") + "\n"
                      for name, e in p.get("other_graphs", {}).items()) +
            f"- ONNX Runtime on CPU, batch {t['batch']}, {t['threads']} threads, alternated "
            f"rounds: {t['source_version']:,.0f} spectra/s for version {source}, "
            f"{t['this_version']:,.0f} for this one ({t['speedup']:.2f}x)\n"
            f"- derived {manifest['training']['derived_from']['created']} from version {source} "
            f"(sha256 {manifest['training']['derived_from']['sha256'][:12]}…)\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="an existing version directory")
    ap.add_argument("dst", type=Path, help="the new version directory (must not exist)")
    ap.add_argument("--spectra", type=int, default=256,
                    help="random spectra for the parity check (besides the real SDSS one)")
    args = ap.parse_args(argv)
    m = json.loads((args.src / "manifest.json").read_text())
    shape = m["inputs"][0]["shape"][1:]
    x = np.random.default_rng(0).normal(size=(args.spectra, *shape)).astype(np.float32)
    manifest = derive(args.src, args.dst, x)
    print(json.dumps(manifest["parity"]["against_version"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
