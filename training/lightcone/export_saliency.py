"""Export ``saliency.onnx`` beside a shipped 21cm lightcone regressor.

``specula train saliency --model-dir models/lightcone_regressor/2`` (dispatched here by the
manifest's kind) writes a graph (lightcone [N,1,X,Y,L], target [N,2P]) → (saliency
[N,1,X,Y,L], theta_mean, theta_sigma): the input gradient of
s = Σ_k target[:,k]·mean_k + target[:,P+k]·σ_k, per row, plus the outputs it explains.

Where the weights come from: by default the served ``model.onnx`` itself — the exporter
rebuilds the :class:`LightconeNet` from its initializers (BatchNorm is already folded into the
convolutions there, so the rebuilt BN is the identity around the folded bias), proves forward
parity against ``model.onnx`` on ONNX Runtime, and only then exports. Saliency then explains
exactly the graph being served, and needs no checkpoint (``runs/`` is not shipped).
``--checkpoint`` uses a training checkpoint instead (same parity check).

Why an explicit backward (same reasons and layout as ``training/spectra/export_saliency.py``, whose
helpers are shared): a forward-only module that keeps what the vector-Jacobian product needs.
- each block is conv(BN folded) → GELU → MaxPool3d; GELU is written as z·Φ(z) so its
  derivative Φ(z) + z·φ(z) reuses Φ from the forward pass (one Exp more, no second Erf);
- the VJP of the stride-1, padding-1 convolution is ConvTranspose with the same weights.
  Unlike the 1D spectrum graph (where a flipped-kernel Conv was faster), ONNX Runtime's 3D
  ConvTranspose beats the equivalent Conv here: the last one (8 → 1 channels on the full
  cube) took 4.7 ms against 16.5 ms as a Conv at batch 8, one thread;
- MaxPool3d keeps its indices (ONNX MaxPool's second output) and its VJP scatters the gradient
  to them (MaxUnpool, exported as ScatterND). ONNX Runtime's MaxPool takes the first index on
  ties, as PyTorch's CPU kernel does — which matters: ionised regions of a cube are exactly
  zero, so whole windows tie, and an equality mask would count a tie several times. Measured
  at batch 8, one thread (saliency / forward): windows moved onto a last axis by Transpose +
  ArgMax + one-hot 6.3x; MaxPool-with-indices as torch exports it 5.8x, 30 % of it a second
  full-size MaxPool that only computes per-plane index offsets; with that rewritten to a
  Range (:func:`cheap_pool_offsets`) 3.5x, and 2.6x once the backward convolutions are
  ConvTranspose;
- the sky mean, the MLP head, the clamp on log σ and the physical-units head are closed form.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from ..common.float32_bounds import gradient_tol
from ..common.manifest import sha256_file
from ..common.ort import ort_session
from ..common.saliency import (
    METHODS,
    SALIENCY_FILE,
    ExportRun,
    autograd_gradient,
    export_module,
    fold_conv_bn,
)
from .config import LightconeConfig, config_from_dict
from .export_onnx import OPSET, physical_head, sky_cells, width_tol
from .model import LOGSIG_MAX, LOGSIG_MIN, OUTPUT_NAMES, LightconeNet, PhysicalHead
from .train import load_checkpoint

INPUTS = ["lightcone", "target"]
OUTPUTS = ["saliency", *OUTPUT_NAMES]
TARGETS = ["<parameter>", "<parameter>:sigma"]
SQRT1_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---- the gradient graph -------------------------------------------------------------------
def gelu_saved(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(GELU(z), Φ(z)): the exact (erf) GELU, with Φ kept for the backward."""
    cdf = 0.5 * (1.0 + torch.erf(z * SQRT1_2))
    return z * cdf, cdf


def gelu_grad(z: torch.Tensor, cdf: torch.Tensor) -> torch.Tensor:
    return cdf + z * torch.exp(-0.5 * z * z) * INV_SQRT_2PI


class LightconeGradient(nn.Module):
    """(lightcone, target [N, 2P]) → (∂(target·(mean, σ))/∂lightcone, mean, σ)."""

    def __init__(self, head: PhysicalHead):
        super().__init__()
        net = head.eval().net
        self.pools: list[tuple[int, int, int] | None] = []
        for i, blk in enumerate(net.features):
            w, b = fold_conv_bn(blk.conv, blk.bn)
            assert blk.conv.padding == (1, 1, 1) and blk.conv.stride == (1, 1, 1)
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"b{i}", b)
            pool = blk.pool
            self.pools.append(tuple(int(v) for v in pool.kernel_size)
                              if isinstance(pool, nn.MaxPool3d) else None)
        lin1, lin2 = net.head[1], net.head[4]
        for name, t in (("W1", lin1.weight), ("b_1", lin1.bias), ("W2", lin2.weight),
                        ("b_2", lin2.bias), ("low", head.low), ("width", head.width),
                        ("sigma_scale", head.sigma_scale)):
            self.register_buffer(name, t.detach().clone())
        self.n_params = net.n_params

    def _t(self, name: str) -> torch.Tensor:
        return getattr(self, name)

    def forward(self, lightcone: torch.Tensor, target: torch.Tensor):
        p = self.n_params
        saved = []
        h = lightcone
        for i, pool in enumerate(self.pools):
            z = F.conv3d(h, self._t(f"w{i}"), self._t(f"b{i}"), padding=1)
            a, cdf = gelu_saved(z)
            h, idx = F.max_pool3d(a, pool, return_indices=True) if pool else (a, None)
            saved.append((z, cdf, idx, a.shape))
        sky = h.shape[2] * h.shape[3]
        f = h.mean(dim=(2, 3))
        u = f.flatten(1) @ self.W1.T + self.b_1
        t, cdf_u = gelu_saved(u)
        out = t @ self.W2.T + self.b_2
        raw = out[:, p:]
        mean = self.low + self.width * out[:, :p]
        sigma = self.width * torch.exp(torch.clamp(raw, LOGSIG_MIN, LOGSIG_MAX)) * self.sigma_scale
        # backward: heads in closed form, then each block in reverse
        inside = ((raw >= LOGSIG_MIN) & (raw <= LOGSIG_MAX)).to(raw.dtype)  # torch's clamp rule
        g_out = torch.cat([target[:, :p] * self.width, target[:, p:] * sigma * inside], dim=1)
        g_u = (g_out @ self.W2) * gelu_grad(u, cdf_u)
        g = ((g_u @ self.W1).reshape(f.shape) / sky).unsqueeze(2).unsqueeze(2).expand(h.shape)
        for i in range(len(self.pools) - 1, -1, -1):
            z, cdf, idx, shape = saved[i]
            pool = self.pools[i]
            if pool is not None:
                g = F.max_unpool3d(g, idx, pool, output_size=shape[2:])
            g = F.conv_transpose3d(g * gelu_grad(z, cdf), self._t(f"w{i}"), padding=1)
        return g, mean, sigma


def cheap_pool_offsets(path: Path) -> int:
    """Rewrite the exported graph so the per-plane offsets of MaxPool indices cost nothing.

    torch exports ``max_pool3d(return_indices=True)`` as ONNX MaxPool (whose indices are
    flat over the whole tensor) plus a second, kernel-1 MaxPool *over the whole activation*
    whose indices, sliced at [:, :, :1, :1, :1], are the offsets (n·C + c)·X·Y·L to subtract;
    that second pool was 30 % of the saliency run. It is replaced by Range(N·C)·X·Y·L
    reshaped to (N, C, 1, 1, 1) — the same int64 tensor. Returns how many were rewritten;
    a graph of another shape is left as it is (still correct, only slower)."""
    model = onnx.load(str(path))
    g = model.graph
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    new_nodes, drop, count = [], set(), 0
    for n in g.node:
        k = next((a.ints for a in n.attribute if a.name == "kernel_shape"), None)
        if n.op_type != "MaxPool" or len(n.output) != 2 or list(k or []) != [1, 1, 1]:
            continue
        sl = users.get(n.output[1], [])
        if len(sl) != 1 or sl[0].op_type != "Slice" or users.get(n.output[0]):
            continue
        p, src, out = f"pool_offsets_{count}", n.input[0], sl[0].output[0]

        i0, i2, i5 = (_const(new_nodes, f"{p}_i{v}", [v]) for v in (0, 2, 5))
        ones3 = _const(new_nodes, f"{p}_ones3", [1, 1, 1])
        s0, s1 = (_const(new_nodes, f"{p}_s{v}", [v], scalar=True) for v in (0, 1))
        new_nodes += [
            helper.make_node("Shape", [src], [f"{p}_shape"]),
            helper.make_node("Slice", [f"{p}_shape", i0, i2], [f"{p}_nc"]),
            helper.make_node("Slice", [f"{p}_shape", i2, i5], [f"{p}_xyl"]),
            helper.make_node("ReduceProd", [f"{p}_nc"], [f"{p}_ncp"], keepdims=0),
            helper.make_node("ReduceProd", [f"{p}_xyl"], [f"{p}_xylp"], keepdims=0),
            helper.make_node("Range", [s0, f"{p}_ncp", s1], [f"{p}_r"]),
            helper.make_node("Mul", [f"{p}_r", f"{p}_xylp"], [f"{p}_off"]),
            helper.make_node("Concat", [f"{p}_nc", ones3], [f"{p}_oshape"], axis=0),
            helper.make_node("Reshape", [f"{p}_off", f"{p}_oshape"], [out]),
        ]
        drop.update({id(n), id(sl[0])})
        count += 1
    if count:
        kept = [n for n in g.node if id(n) not in drop]
        del g.node[:]
        g.node.extend(new_nodes + kept)
        model = _toposort(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return count


def _const(nodes: list, name: str, vals: list[int], scalar: bool = False) -> str:
    nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(
        f"{name}_v", TensorProto.INT64, [] if scalar else [len(vals)], vals)))
    return name


def _toposort(model):
    """Nodes in dependency order (the rewritten nodes read activations made later)."""
    g = model.graph
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, order = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError("cycle or dangling input in the rewritten graph")
        pending = rest
    del g.node[:]
    g.node.extend(order)
    return model


# ---- where the weights come from ------------------------------------------------------------
def config_of(manifest: dict[str, Any]) -> LightconeConfig:
    return config_from_dict(manifest["training"]["config"])


def head_from_onnx(model_dir: Path) -> tuple[LightconeConfig, PhysicalHead]:
    """Rebuild the served network from model.onnx's initializers (BN folded: identity BN)."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    cfg = config_of(manifest)
    graph = onnx.load(str(model_dir / manifest["file"])).graph
    init = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    net = LightconeNet(cfg.model, cfg.grid.model_grid(), len(cfg.param_names)).eval()
    state = net.state_dict()
    for i, blk in enumerate(net.features):
        state[f"features.{i}.conv.weight"] = init[f"net.features.{i}.conv.weight"]
        bias = init.get(f"net.features.{i}.conv.weight_bias")
        if bias is None:
            raise SystemExit(f"{model_dir}: model.onnx has no folded bias for block {i}; "
                             "use --checkpoint")
        state[f"features.{i}.bn.bias"] = bias
        state[f"features.{i}.bn.weight"] = torch.ones_like(bias)
        state[f"features.{i}.bn.running_mean"] = torch.zeros_like(bias)
        state[f"features.{i}.bn.running_var"] = torch.ones_like(bias)
        blk.bn.eps = 0.0  # scale exactly 1 in float32 and float64: folding it again is exact
    for k in ("head.1.weight", "head.1.bias", "head.4.weight", "head.4.bias"):
        state[k] = init[f"net.{k}"]
    net.load_state_dict(state)
    head = PhysicalHead(net, init["low"], init["low"] + init["width"], init["sigma_scale"])
    return cfg, head.eval()


def head_from_checkpoint(path: Path) -> tuple[LightconeConfig, PhysicalHead]:
    cfg, net, scale = load_checkpoint(path)
    return cfg, physical_head(net, cfg, scale)


# ---- checks ---------------------------------------------------------------------------------
def parity_inputs(shape: tuple[int, ...], n: int = 4, seed: int = 0,
                  cubes: np.ndarray | None = None) -> np.ndarray:
    """Model inputs for the checks: given preprocessed cubes, or lightcone-like fields
    (smooth fluctuations whose amplitude and mean drift along the line of sight, with an
    exactly-zero 'ionised' low-redshift end, so the max-pool tie rule is exercised)."""
    if cubes is not None:
        return np.ascontiguousarray(cubes[:n], dtype=np.float32)
    rng = np.random.default_rng(seed)
    _, nx, ny, nl = shape
    out = np.zeros((n, *shape), dtype=np.float32)
    los = np.linspace(0.0, 1.0, nl)
    for i in range(n):
        field = rng.normal(size=(nx, ny, nl))
        for ax in range(3):  # a little smoothing: correlated structure, not white noise
            field = (field + np.roll(field, 1, ax) + np.roll(field, -1, ax)) / 3.0
        trough = -1.5 * np.exp(-0.5 * ((los - rng.uniform(0.2, 0.5)) / 0.12) ** 2)
        cube = trough + 0.5 * field * (0.3 + los)
        cube[..., los > rng.uniform(0.75, 0.9)] = 0.0  # fully ionised: T_b = 0 exactly
        out[i, 0] = cube
    return out


def target_rows(n_params: int, rows: list[tuple[int, bool]]) -> np.ndarray:
    """One-hot targets: (parameter index, sigma?) per row."""
    t = np.zeros((len(rows), 2 * n_params), dtype=np.float32)
    for r, (k, sig) in enumerate(rows):
        t[r, k + n_params * sig] = 1.0
    return t


def torch_gradient(head: PhysicalHead, x: np.ndarray, target: np.ndarray,
                   dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Autograd through the unmodified PhysicalHead(LightconeNet) of target · (mean, σ)."""
    def explained(out, tt: torch.Tensor) -> torch.Tensor:
        mean, sigma = out
        p = mean.shape[1]
        return (mean * tt[:, :p]).sum() + (sigma * tt[:, p:]).sum()

    return autograd_gradient(head, x, target, explained, dtype).astype(np.float64)


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    return (np.linalg.norm((a - b).reshape(n, -1), axis=1)
            / np.maximum(np.linalg.norm(b.reshape(n, -1), axis=1), 1e-30))


def forward_parity(head: PhysicalHead, model_onnx: Path, x: np.ndarray) -> float:
    """max |torch − model.onnx| / prior width over both outputs: the rebuilt net *is* the
    served one before anything is exported from it."""
    sess = ort_session(model_onnx)
    a = sess.run(OUTPUT_NAMES, {"lightcone": x})
    with torch.no_grad():
        b = [t.numpy() for t in head(torch.from_numpy(x))]
    width = head.width.numpy()
    return float(max(np.max(np.abs(u - v) / width) for u, v in zip(a, b)))


def saliency_parity(head: PhysicalHead, path: Path, x: np.ndarray) -> dict[str, Any]:
    """Relative L2 error of the ONNX gradient per cube, mean and σ targets, against autograd
    in float32 and in float64.

    Why both: a max-pool gradient is discontinuous where two values of a window tie, and on
    real cubes a window can tie to within float32 rounding; there float32 and float64 pick
    different winners and *any* float32 gradient (PyTorch's own included) differs from the
    float64 one by percents. ``well_conditioned`` are the cubes where float32 autograd agrees
    with float64 autograd to float32 rounding (``well_conditioned_cutoff``: gradient_tol of
    the net's layers and sky mean, one float32 side, training/common/float32_bounds.py); the float64
    figure is reported over those."""
    sess = ort_session(path)
    p = int(head.width.shape[0])
    cutoff = gradient_tol(head.net, [sky_cells(head.net, x.shape[1:])], sides=1)
    out: dict[str, Any] = {}
    for kind, sig in (("mean", False), ("sigma", True)):
        t = target_rows(p, [(i % p, sig) for i in range(len(x))])
        g = sess.run(["saliency"], {"lightcone": x, "target": t})[0]
        ref64, ref32 = torch_gradient(head, x, t), torch_gradient(head, x, t, torch.float32)
        ok = rel_l2(ref32, ref64) <= cutoff
        e64 = rel_l2(g, ref64)
        out[kind] = {"vs_float32_autograd": float(rel_l2(g, ref32).max()),
                     "vs_float64_autograd": float(e64[ok].max()) if ok.any() else None,
                     "well_conditioned": int(ok.sum()), "well_conditioned_cutoff": cutoff,
                     "n_cubes": len(x),
                     "vs_float64_all_cubes": [float(v) for v in e64]}
    return out


def cost_ratio(model_onnx: Path, saliency_onnx: Path, shape: tuple[int, ...], p: int,
               batch: int = 8, repeats: int = 5, threads: int = 1) -> dict[str, float]:
    """Median wall time of one saliency batch over one forward batch, same ORT settings."""
    x = parity_inputs(shape, batch)
    t = target_rows(p, [(0, False)] * batch)
    fwd, sal = ort_session(model_onnx, threads), ort_session(saliency_onnx, threads)

    def median(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    tf = median(lambda: fwd.run(None, {"lightcone": x}))
    ts = median(lambda: sal.run(None, {"lightcone": x, "target": t}))
    return {"forward_s": tf, "saliency_s": ts, "ratio": ts / tf, "batch": batch,
            "threads": threads}


# ---- export ---------------------------------------------------------------------------------
def export_saliency(head: PhysicalHead, model_dir: Path, shape: tuple[int, ...],
                    parity_x: np.ndarray | None = None) -> dict[str, Any]:
    """Write saliency.onnx into ``model_dir``; returns the manifest entry."""
    head = head.eval().float()
    p = int(head.width.shape[0])
    graph = LightconeGradient(head).eval()
    path = model_dir / SALIENCY_FILE
    args = (torch.zeros(2, *shape), torch.zeros(2, 2 * p))
    # dynamo: max_unpool3d exports only so
    export_module(graph, args, path, INPUTS, OUTPUTS, opset=OPSET)
    cheap_pool_offsets(path)
    entry: dict[str, Any] = {
        "file": SALIENCY_FILE,
        "sha256": sha256_file(path),
        "inputs": [{"name": "lightcone", "dtype": "float32", "shape": [-1, *shape]},
                   {"name": "target", "dtype": "float32", "shape": [-1, 2 * p]}],
        "outputs": [{"name": "saliency", "dtype": "float32", "shape": [-1, *shape]},
                    {"name": "theta_mean", "dtype": "float32", "shape": [-1, p]},
                    {"name": "theta_sigma", "dtype": "float32", "shape": [-1, p]}],
        "target": "weights on (theta_mean[0..P), theta_sigma[0..P)); saliency = "
                  "∂(target · (mean, σ))/∂lightcone, physical units",
        "targets": TARGETS,
        "methods": list(METHODS),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if parity_x is not None:
        entry["parity"] = {"max_rel_l2": saliency_parity(head, path, parity_x),
                           "reference": "torch.autograd through PhysicalHead(LightconeNet), "
                                        "float32 and float64 (see saliency_parity)",
                           "n_cubes": len(parity_x)}
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = ExportRun.parser("export saliency.onnx beside a shipped lightcone regressor",
                          "models/lightcone_regressor/2")
    ap.add_argument("--checkpoint", help="rebuild from this checkpoint (default: from "
                                         "model.onnx's own weights)")
    ap.add_argument("--from-manifest-checkpoint", action="store_true",
                    help="use the checkpoint the manifest's training provenance names")
    ap.add_argument("--parity-n", type=int, default=4, help="cubes for the autograd check")
    ap.add_argument("--cubes", help="preprocessed cubes (N,1,X,Y,L) for the checks: .npy, or "
                                    ".npz with 'x' (default: synthetic lightcone-like cubes)")
    run = ExportRun.start(ap, argv)
    a, model_dir, manifest, model_onnx = run.args, run.model_dir, run.manifest, run.model_onnx
    if a.checkpoint or a.from_manifest_checkpoint:
        ck = run.checkpoint()
        _, head = head_from_checkpoint(ck)
        source = str(ck)
    else:
        _, head = head_from_onnx(model_dir)
        source = f"{manifest['file']} initializers (sha256 {run.sha_before[:12]})"
    shape = tuple(int(d) for d in manifest["inputs"][0]["shape"][1:])
    cubes = None
    if a.cubes:
        cubes = np.load(a.cubes, allow_pickle=False)
        cubes = cubes["x"] if isinstance(cubes, np.lib.npyio.NpzFile) else cubes
    x = parity_inputs(shape, a.parity_n, cubes=cubes)
    fwd, fwd_tol = forward_parity(head, model_onnx, x), width_tol(head, x)
    if fwd > fwd_tol:  # a wrong rebuild is off by percents; rounding by fwd_tol at most
        raise SystemExit(f"rebuilt network disagrees with {model_onnx}: {fwd:.2e} of the "
                         f"prior width (float32 rounding allows {fwd_tol:.1e})")
    entry = export_saliency(head, model_dir, shape, x)
    entry["weights_from"] = source
    entry["forward_parity_vs_model_onnx"] = {"max_diff_over_prior_width": fwd,
                                             "tolerance_over_prior_width": fwd_tol,
                                             "n_cubes": len(x)}
    entry["cost"] = cost_ratio(model_onnx, model_dir / SALIENCY_FILE, shape,
                               int(head.width.shape[0]))
    return run.ship(entry, {"weights_from": source, "forward_parity": fwd,
                            "parity_max_rel_l2": entry["parity"]["max_rel_l2"],
                            "cost": entry["cost"]})


if __name__ == "__main__":
    sys.exit(main())
