"""Parity tolerances derived from float32 arithmetic, not from one machine's measurement.

Used by the exporters (the cutoffs they write into manifests) and by the tests, so both hold
the same bound.

A bound such as "rel. L2 < 1e-5" held on the CPU it was tuned on and failed at 2.5e-5 on
another (other SIMD widths and kernels sum in other orders). The derivation:

- Every layer computes dot products of n terms: a convolution in_channels x kernel-volume terms
  per output going forward and out_channels x kernel-volume per input-gradient going backward,
  a Linear in_features forward and out_features backward. Summed in float32 (unit roundoff
  u = eps32 / 2 = 2^-24), a dot product is off by at most n·u·Σ|terms| in the worst case; with
  rounding errors independent and of mean zero (what blocked and SIMD sums do in practice) it
  is off by at most λ·sqrt(n)·u·Σ|terms| with probability 1 - 2·exp(-λ²/2) (Higham & Mary,
  SIAM J. Sci. Comput. 41 (2019) A2815). λ = 4 (probability ≥ 0.999 per element; the relative
  L2 norms checked here average over thousands of elements), and it leaves room for a typical
  Σ|terms| / |Σ terms| of up to ~2.
- Through a chain of layers the first-order relative errors add (each layer's Jacobian carries
  the error of the layers before it; on the well-conditioned inputs checked here with gain
  O(1)). A gradient depends on the forward activations too, so it sums both passes.
- Against a float64 reference only the float32 side errs (sides = 1); against another float32
  implementation (ONNX Runtime vs PyTorch) both do, independently (sides = 2).

So rel_tol = sides · λ · u · Σ_layers sqrt(n_layer): about 2e-5 per side for the shipped 3-D
lightcone network, a tenth of that for the tiny test networks. A real defect (a wrong max-pool
tie rule, a mis-folded BatchNorm) is off by 1e-2 or more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper
from torch import nn

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32, 2^-24
LAMBDA = 4.0


def reduction_lengths(net: nn.Module) -> tuple[list[int], list[int]]:
    """(forward, backward) dot-product lengths of each Conv/Linear layer of ``net``: one chain
    of layers (pass an ensemble's member, not the ensemble, whose members run side by side)."""
    forward, backward = [], []
    for m in net.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            k = math.prod(m.kernel_size)
            forward.append(m.in_channels // m.groups * k)
            backward.append(m.out_channels // m.groups * k)
        elif isinstance(m, nn.Linear):
            forward.append(m.in_features)
            backward.append(m.out_features)
    return forward, backward


def rel_tol(lengths: Iterable[int], sides: int = 1) -> float:
    """The relative error float32 rounding allows through reductions of these lengths."""
    return sides * LAMBDA * U32 * sum(math.sqrt(n) for n in lengths)


def gradient_tol(net: nn.Module, extra: Iterable[int] = (), sides: int = 1) -> float:
    """Relative L2 tolerance of a float32 input gradient of ``net`` (forward and backward
    pass); ``extra``: reductions outside its layers (a mean over the sky, over members)."""
    forward, backward = reduction_lengths(net)
    return rel_tol([*forward, *backward, *extra], sides)


def forward_tol(net: nn.Module, extra: Iterable[int] = (), sides: int = 1) -> float:
    """Relative tolerance of ``net``'s float32 outputs (forward pass only)."""
    return rel_tol([*reduction_lengths(net)[0], *extra], sides)


def _onnx_length(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """Forward dot-product length of a Conv/ConvTranspose/Gemm/MatMul with a constant weight
    (0 for any other node)."""
    w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return 0
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":  # (out, in/groups, *kernel): in/groups x kernel per output
        return math.prod(w[1:])
    if node.op_type == "ConvTranspose":  # (in, out/groups, *kernel): in/groups x kernel
        return w[0] // attrs.get("group", 1) * math.prod(w[2:])
    if node.op_type == "Gemm":
        return w[1] if attrs.get("transB", 0) else w[0]
    if node.op_type == "MatMul" and len(w) >= 2:
        return w[-2]
    return 0


def onnx_reduction_lengths(model: onnx.ModelProto) -> list[int]:
    """Forward dot-product lengths along ``model``'s heaviest chain (largest Σ sqrt(n)) of
    Conv/ConvTranspose/Gemm/MatMul nodes, for a graph whose PyTorch module is not at hand:
    an ensemble's members run side by side (separate chains, as reduction_lengths takes one
    member); a saliency graph's backward pass continues its forward chain."""
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    best: dict[str, tuple[float, list[int]]] = {}
    for node in model.graph.node:  # ONNX graphs list their nodes in topological order
        prev = max((best[i] for i in node.input if i in best), key=lambda b: b[0],
                   default=(0.0, []))
        n = _onnx_length(node, shapes)
        here = (prev[0] + math.sqrt(n), [*prev[1], n]) if n else prev
        for out in node.output:
            best[out] = here
    return max(best.values(), key=lambda b: b[0], default=(0.0, []))[1]
