"""Export ``saliency.onnx`` and ``introspect.onnx`` beside a shipped spectrum classifier.

``specula train saliency --model-dir models/spectrum_classifier/1`` (or
``python -m training.spectra.export_saliency --model-dir ...``) rebuilds the ensemble from the
checkpoint the manifest's provenance names, writes the two graphs, checks them against PyTorch
autograd and adds a ``saliency`` entry to ``manifest.json`` (model.onnx is never touched; its
sha256 is re-verified before and after).

Why an explicit backward and not a traced one: ``torch.onnx.export`` cannot export
``autograd.grad``, and a make_fx trace of forward+backward exported with
``convolution_backward`` decomposed costs ~5x a forward pass. The ensemble is simple enough
to write its vector-Jacobian product by hand, layer by layer, as a plain forward-only module:

- BatchNorm is folded into each convolution first (eval mode), so a layer is ``conv + bias``;
- the VJP of a convolution is ``conv_transpose1d`` with the same weights, stride and padding
  (``output_padding`` restores the exact input length); stride-1 ones are written as an
  ordinary convolution with the kernel flipped and in/out channels swapped, which ONNX
  Runtime runs on its fast Conv path;
- the VJP of ReLU is the mask ``y > 0`` of the forward activation, reused, not recomputed,
  written as ``g · min(3e38·y, 1)`` (see :func:`relu_mask`) because ONNX Runtime's Sign and
  Greater+Where were measured to cost ~0.5x a forward pass by themselves;
- no weight gradients are formed, only the input gradient;
- the heads are closed-form: for s = Σ_k w_k·probs_k + w_z·z,
  ∂s/∂logits_m = p_m ⊙ (w − ⟨w, p_m⟩) / (M·T) and ∂s/∂μ_m = w_z·(1+z)/M.

So one run costs about one forward plus one backward of the convolutions (≈ 2x a forward),
and it returns the forward outputs it explains. The target is a *linear functional* of the
outputs (``target`` [N, K+1]: weights on the K label probabilities and on z), which covers a
label, a top class (the sum of its labels), the redshift, and — by exact rescaling in the
service — log-probability and log-odds; see models/README.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..common import saliency as shared  # the exporter both trainers share
from ..common.manifest import sha256_file
from ..common.ort import ort_session
from .conv2d import rewrite_in_place
from .export_onnx import OPSET
from .model import Ensemble, SpectrumNet
from .train import load_checkpoint

INTROSPECT_FILE = "introspect.onnx"
SALIENCY_OUTPUTS = ["saliency", "probs", "z", "z_sigma"]
TARGETS = ["<label>", "<top class>", "top", "redshift"]
SCALES = ["probability", "log_probability", "logit"]


# ---- the gradient graph -------------------------------------------------------------------
def relu_mask(y: torch.Tensor) -> torch.Tensor:
    """1 where the ReLU output ``y`` ≥ 0 is positive, else 0, as Mul + Clip: any normal float32
    y > 0 times 3e38 is ≥ 1 (or inf) and clips to exactly 1; y = 0 stays 0. ONNX Runtime runs
    both vectorised (Sign took 27 ms of a 224 ms batch-32 run; Greater+Where was no better)."""
    return torch.clamp(y * 3e38, max=1.0)


def _out_len(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


class _Conv:
    """A folded convolution and what its VJP needs: the static output padding."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, stride: int, pad: int, n_in: int):
        self.w, self.b, self.stride, self.pad = w, b, stride, pad
        k = w.shape[-1]
        self.n_in, self.n_out = n_in, _out_len(n_in, k, stride, pad)
        self.out_pad = n_in - ((self.n_out - 1) * stride - 2 * pad + k)
        assert 0 <= self.out_pad < max(stride, 1) or stride == 1 and self.out_pad == 0
        # stride 1: the transposed conv is a conv with the kernel flipped, channels swapped
        self.w_flip = w.flip(-1).transpose(0, 1).contiguous()


class MemberGradient(nn.Module):
    """One SpectrumNet in eval mode with BN folded: forward that keeps what the VJP needs."""

    def __init__(self, net: SpectrumNet, npix: int):
        super().__init__()
        net = net.eval()
        n = npix
        stem_conv, stem_bn = net.stem[0], net.stem[1]
        w, b = shared.fold_conv_bn(stem_conv, stem_bn)
        self.stem = _Conv(w, b, stem_conv.stride[0], stem_conv.padding[0], n)
        n = self.stem.n_out
        self.blocks = []
        for blk in net.blocks:
            c1 = _Conv(*shared.fold_conv_bn(blk.conv1, blk.bn1), blk.conv1.stride[0],
                       blk.conv1.padding[0], n)
            c2 = _Conv(*shared.fold_conv_bn(blk.conv2, blk.bn2), 1, blk.conv2.padding[0], c1.n_out)
            sk = _Conv(*shared.fold_conv_bn(blk.skip[0], blk.skip[1]), blk.skip[0].stride[0],
                       blk.skip[0].padding[0], n)
            assert c2.n_out == c1.n_out == sk.n_out
            self.blocks.append((c1, c2, sk))
            n = c1.n_out
        lin = net.trunk[1]
        self.register_buffer("wt", lin.weight.detach().clone())
        self.register_buffer("bt", lin.bias.detach().clone())
        self.register_buffer("wc", net.cls.weight.detach().clone())
        self.register_buffer("bc", net.cls.bias.detach().clone())
        self.register_buffer("wr", net.reg.weight.detach().clone())
        self.register_buffer("br", net.reg.bias.detach().clone())
        # register every conv tensor so .to(dtype) and export see them as constants
        for i, conv in enumerate(self._convs()):
            for attr in ("w", "b", "w_flip"):
                self.register_buffer(f"c{i}_{attr}", getattr(conv, attr))

    def _convs(self) -> list[_Conv]:
        return [self.stem] + [c for blk in self.blocks for c in blk]

    def _t(self, i: int, attr: str) -> torch.Tensor:
        return getattr(self, f"c{i}_{attr}")

    def _conv(self, i: int, c: _Conv, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self._t(i, "w"), self._t(i, "b"), stride=c.stride, padding=c.pad)

    def _conv_vjp(self, i: int, c: _Conv, g: torch.Tensor) -> torch.Tensor:
        """∂/∂input of ⟨g, conv(input)⟩."""
        if c.stride == 1:
            k = c.w.shape[-1]
            return F.conv1d(g, self._t(i, "w_flip"), padding=k - 1 - c.pad)
        return F.conv_transpose1d(g, self._t(i, "w"), stride=c.stride, padding=c.pad,
                                  output_padding=c.out_pad)

    def forward_saved(self, x: torch.Tensor):
        """(logits, mu, logvar, saved activations)."""
        a0 = F.relu(self._conv(0, self.stem, x))
        saved, h = [], a0
        ins = []
        for j, (c1, c2, sk) in enumerate(self.blocks):
            i = 1 + 3 * j
            ins.append(h)
            h1 = F.relu(self._conv(i, c1, h))
            out = F.relu(self._conv(i + 1, c2, h1) + self._conv(i + 2, sk, h))
            saved.append((h1, out))
            h = out
        pen = ins[-1]  # input of the last block = the finer of the two flattened stages
        f = torch.cat([pen.flatten(1), h.flatten(1)], dim=1)
        t = F.relu(f @ self.wt.T + self.bt)
        logits = t @ self.wc.T + self.bc
        r = t @ self.wr.T + self.br
        return logits, r[:, 0], r[:, 1], (a0, saved, pen.shape, h.shape, t)

    def input_gradient(self, state, g_logits: torch.Tensor, g_mu: torch.Tensor) -> torch.Tensor:
        a0, saved, pen_shape, last_shape, t = state
        g_t = g_logits @ self.wc + g_mu[:, None] * self.wr[0]
        g_t = g_t * relu_mask(t)
        g_f = g_t @ self.wt
        n_pen = pen_shape[1] * pen_shape[2]
        g_pen = g_f[:, :n_pen].reshape(-1, pen_shape[1], pen_shape[2])
        g = g_f[:, n_pen:].reshape(-1, last_shape[1], last_shape[2])
        for j in range(len(self.blocks) - 1, -1, -1):
            c1, c2, sk = self.blocks[j]
            i = 1 + 3 * j
            h1, out = saved[j]
            g_u = g * relu_mask(out)
            g_h1 = self._conv_vjp(i + 1, c2, g_u) * relu_mask(h1)
            g = self._conv_vjp(i, c1, g_h1) + self._conv_vjp(i + 2, sk, g_u)
            if j == len(self.blocks) - 1:
                g = g + g_pen
        g = g * relu_mask(a0)
        return self._conv_vjp(0, self.stem, g)


class SaliencyGraph(nn.Module):
    """(spectrum [N,2,npix], target [N,K+1]) → (saliency [N,2,npix], probs, z, z_sigma).

    ``saliency`` = ∂(Σ_k target[:,k]·probs_k + target[:,K]·z)/∂spectrum, per row.
    """

    def __init__(self, ens: Ensemble, npix: int):
        super().__init__()
        ens = ens.eval()
        self.members = nn.ModuleList(MemberGradient(m, npix) for m in ens.members)
        self.register_buffer("temperature", ens.temperature.detach().clone())
        self.register_buffer("z_sigma_scale", ens.z_sigma_scale.detach().clone())

    def forward(self, spectrum: torch.Tensor, target: torch.Tensor):
        m_count = len(self.members)
        k = target.shape[1] - 1
        w, w_z = target[:, :k], target[:, k]
        outs = [m.forward_saved(spectrum) for m in self.members]
        logits = torch.stack([o[0] for o in outs]) / self.temperature  # (M, N, K)
        mu = torch.stack([o[1] for o in outs])
        var = torch.exp(torch.stack([o[2] for o in outs]).clamp(-18.0, 4.0))
        p = torch.softmax(logits, dim=-1)
        probs = p.mean(0)
        mu_bar = mu.mean(0)
        z = torch.exp(mu_bar) - 1.0
        var_t = var.mean(0) + ((mu - mu_bar) ** 2).mean(0)
        z_sigma = self.z_sigma_scale * (1.0 + z) * torch.sqrt(var_t)
        # closed-form head VJPs, then each member's backward; the gradient is their sum
        # (w − ⟨w, p⟩)_i written as Σ_j p_j (w_i − w_j): no cancellation of 1 − p_i when a
        # class saturates (p_i → 1 in float32), where the short form loses 3 digits
        centred = ((w[:, :, None] - w[:, None, :]) * p[:, :, None, :]).sum(-1)
        g_logits = p * centred / (m_count * self.temperature)
        g_mu = w_z * (1.0 + z) / m_count
        grad = self.members[0].input_gradient(outs[0][3], g_logits[0], g_mu)
        for j in range(1, m_count):
            grad = grad + self.members[j].input_gradient(outs[j][3], g_logits[j], g_mu)
        return grad, probs, z, z_sigma


# ---- introspection ------------------------------------------------------------------------
def layer_names(n_blocks: int) -> list[str]:
    return ["stem"] + [f"block{i + 1}" for i in range(n_blocks)]


class IntrospectGraph(nn.Module):
    """spectrum [N,2,npix] → first-layer filters [M,C,2,k] (learnt weights, BN not folded)
    and each layer's activations [N, M, C_l, L_l] (post-ReLU, the member axis second)."""

    def __init__(self, ens: Ensemble):
        super().__init__()
        self.members = nn.ModuleList(ens.eval().members)
        self.register_buffer("stem_weights", torch.stack(
            [m.stem[0].weight.detach().clone() for m in ens.members]))

    def forward(self, spectrum: torch.Tensor):
        per_layer: list[list[torch.Tensor]] = []
        for m in self.members:
            h = m.stem(spectrum)
            acts = [h]
            for blk in m.blocks:
                h = blk(h)
                acts.append(h)
            per_layer.append(acts)
        stacked = [torch.stack([acts[i] for acts in per_layer], dim=1)
                   for i in range(len(per_layer[0]))]
        # the filters depend on nothing: tie them to the input's dtype so they are a real output
        return (self.stem_weights + spectrum[:1, :1, :1].sum() * 0.0, *stacked)


# ---- export ---------------------------------------------------------------------------------
def target_matrix(n_labels: int, rows: list[int | str]) -> np.ndarray:
    """One-hot target rows: an int selects a label probability, ``"z"`` the redshift."""
    t = np.zeros((len(rows), n_labels + 1), dtype=np.float32)
    for i, r in enumerate(rows):
        t[i, n_labels if r == "z" else int(r)] = 1.0
    return t


def torch_gradient(ens: Ensemble, x: np.ndarray, target: np.ndarray,
                   dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Autograd through the unmodified ensemble of s = target · (probs, z)."""
    def explained(out, tt: torch.Tensor) -> torch.Tensor:
        k = tt.shape[1] - 1
        probs, _, _, z, _ = out
        return (probs * tt[:, :k]).sum() + (z * tt[:, k]).sum()

    return shared.autograd_gradient(ens, x, target, explained, dtype)


def saliency_parity(ens: Ensemble, path: Path, x: np.ndarray) -> dict[str, float]:
    """Relative L2 error of the ONNX gradient vs float64 autograd, per target kind."""
    sess = ort_session(path)
    n_labels = ens.members[0].cls.out_features
    out = {}
    for name, rows in (("label", [i % n_labels for i in range(len(x))]), ("z", ["z"] * len(x))):
        t = target_matrix(n_labels, rows)
        g_onnx = sess.run(["saliency"], {"spectrum": x.astype(np.float32), "target": t})[0]
        g_ref = torch_gradient(ens, x, t)
        err = np.linalg.norm((g_onnx - g_ref).reshape(len(x), -1), axis=1)
        ref = np.linalg.norm(g_ref.reshape(len(x), -1), axis=1)
        out[name] = float(np.max(err / np.maximum(ref, 1e-30)))
    return out


def export_saliency(ens: Ensemble, model_dir: Path, npix: int, n_labels: int,
                    parity_x: np.ndarray | None = None, *, dynamo: bool = True
                    ) -> dict[str, Any]:
    """Write saliency.onnx + introspect.onnx into ``model_dir``; returns the manifest entry."""
    ens = ens.eval().float()
    sal = SaliencyGraph(ens, npix).eval()
    x = torch.zeros(2, 2, npix)
    t = torch.zeros(2, n_labels + 1)
    sal_path, intro_path = model_dir / shared.SALIENCY_FILE, model_dir / INTROSPECT_FILE
    shared.export_module(sal, (x, t), sal_path, ["spectrum", "target"], SALIENCY_OUTPUTS, dynamo,
                  opset=OPSET)
    rewrite_in_place(sal_path)  # 2-D convolutions as in model.onnx; the parity below covers it
    names = layer_names(len(ens.members[0].blocks))
    intro = IntrospectGraph(ens).eval()
    shared.export_module(intro, (x,), intro_path, ["spectrum"], ["filters"] + names, dynamo,
                  opset=OPSET)
    with torch.no_grad():
        acts = intro(torch.zeros(1, 2, npix))
    entry: dict[str, Any] = {
        "file": shared.SALIENCY_FILE,
        "sha256": sha256_file(sal_path),
        "inputs": [{"name": "spectrum", "dtype": "float32", "shape": [-1, 2, npix]},
                   {"name": "target", "dtype": "float32", "shape": [-1, n_labels + 1]}],
        "outputs": [{"name": "saliency", "dtype": "float32", "shape": [-1, 2, npix]},
                    {"name": "probs", "dtype": "float32", "shape": [-1, n_labels]},
                    {"name": "z", "dtype": "float32", "shape": [-1]},
                    {"name": "z_sigma", "dtype": "float32", "shape": [-1]}],
        "targets": TARGETS,
        "scales": SCALES,
        "methods": shared.METHODS,
        "introspect": {
            "file": INTROSPECT_FILE,
            "sha256": sha256_file(intro_path),
            "layers": [{"name": n, "channels": int(a.shape[2]), "length": int(a.shape[3])}
                       for n, a in zip(names, acts[1:])],
            "filters_shape": list(acts[0].shape),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if parity_x is not None:
        entry["parity"] = {"max_rel_l2": saliency_parity(ens, sal_path, parity_x),
                           "reference": "torch.autograd (float64) through Ensemble",
                           "n_spectra": len(parity_x)}
    return entry


def parity_inputs(npix: int, n: int = 8, seed: int = 0) -> np.ndarray:
    """Spectrum-like inputs (smooth continuum + lines + noise, weight channel in [0, 1))."""
    rng = np.random.default_rng(seed)
    u = np.linspace(0, 1, npix)
    x = np.zeros((n, 2, npix), dtype=np.float32)
    for i in range(n):
        cont = 1 + 0.5 * np.sin(2 * np.pi * (u * rng.uniform(0.5, 2) + rng.uniform()))
        lines = sum(rng.uniform(1, 5) * np.exp(-0.5 * ((u - rng.uniform()) / 0.002) ** 2)
                    for _ in range(4))
        x[i, 0] = cont + lines + rng.normal(0, 0.2, npix)
        x[i, 1] = rng.uniform(0.3, 0.9, npix)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = shared.ExportRun.parser("export saliency.onnx + introspect.onnx beside a shipped spectrum "
                          "classifier", "models/spectrum_classifier/1")
    ap.add_argument("--checkpoint", help="default: the manifest's training.checkpoint")
    ap.add_argument("--parity-n", type=int, default=8, help="spectra for the autograd check")
    run = shared.ExportRun.start(ap, argv)
    ck = run.checkpoint()
    _, ens, _ = load_checkpoint(ck)
    npix = int(run.manifest["inputs"][0]["shape"][-1])
    n_labels = len(run.manifest["labels"])
    entry = export_saliency(ens, run.model_dir, npix, n_labels,
                            parity_inputs(npix, run.args.parity_n))
    entry["checkpoint"] = str(ck)
    return run.ship(entry, {"introspect_sha256": entry["introspect"]["sha256"][:12],
                            "parity_max_rel_l2": entry.get("parity", {}).get("max_rel_l2")})


if __name__ == "__main__":
    sys.exit(main())
