"""What both saliency exporters (spectra, lightcone) share: BN folding, the ONNX export of a
forward-only gradient module, the autograd reference every parity check compares with, the
start of the command line, and the manifest's ``saliency`` entry. The model-specific graphs stay
in each trainer's export_saliency."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .manifest import sha256_file, write_manifest

REPO = Path(__file__).resolve().parents[2]
SALIENCY_FILE = "saliency.onnx"
METHODS = ["gradient", "gradient_x_input", "smoothgrad", "integrated_gradients"]


def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN folded into the preceding (bias-free or biased) convolution, any rank
    (Conv1d here, Conv3d in the lightcone exporter)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale.reshape(-1, *[1] * (conv.weight.dim() - 1))
    b = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        b = b + conv.bias * scale
    return w.detach().clone(), b.detach().clone()


def export_module(module: nn.Module, args: tuple, path: Path, input_names: list[str],
            output_names: list[str], dynamo: bool = True, *, opset: int) -> None:
    """``opset``: the exporter's (its export_onnx.OPSET). dynamo=True (the shipped path, as export_onnx); False: the TorchScript exporter, ~10x
    faster to run, which tests use — the module is forward-only either way."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not dynamo:
            torch.onnx.export(module.eval(), args, str(path), input_names=input_names,
                              output_names=output_names, opset_version=opset, dynamo=False,
                              dynamic_axes={n: {0: "N"} for n in input_names + output_names
                                            if n != "filters"})
            return
        batch = torch.export.Dim("batch", min=1, max=65536)
        shapes = {n: {0: batch} for n in input_names}
        torch.onnx.export(module.eval(), args, str(path), input_names=input_names,
                          output_names=output_names, dynamic_shapes=shapes,
                          opset_version=opset, external_data=False, dynamo=True, verbose=False)


def autograd_gradient(module: nn.Module, x: np.ndarray, target: np.ndarray,
                      explained: Callable[[Any, torch.Tensor], torch.Tensor],
                      dtype: torch.dtype = torch.float64) -> np.ndarray:
    """The reference of every saliency graph: PyTorch autograd of the scalar
    ``explained(module(x), target)`` w.r.t. x, through the unmodified model in ``dtype``."""
    module = module.eval().to(dtype)
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    (g,) = torch.autograd.grad(explained(module(xt), torch.tensor(target, dtype=dtype)), xt)
    module.to(torch.float32)
    return g.detach().numpy()


@dataclass(frozen=True)
class ExportRun:
    """One run of an exporter's command line (``specula train saliency``): its arguments, the
    model directory, that directory's manifest, and model.onnx's sha256 as the run found it.
    An exporter only adds files beside a shipped model; :meth:`ship` proves model.onnx is
    untouched before it reports, so both exporters keep that promise the same way."""

    args: argparse.Namespace
    model_dir: Path
    manifest: dict[str, Any]
    sha_before: str

    @staticmethod
    def parser(description: str, model_dir_example: str) -> argparse.ArgumentParser:
        """The command line every exporter starts from, before its own options: ``specula
        train saliency`` and the ``--model-dir`` by whose manifest training/cli.py picks the
        exporter, so every exporter must take it alike."""
        ap = argparse.ArgumentParser(prog="specula train saliency", description=description)
        ap.add_argument("--model-dir", required=True, help=f"e.g. {model_dir_example}")
        return ap

    @classmethod
    def start(cls, ap: argparse.ArgumentParser, argv: list[str] | None) -> ExportRun:
        """Parse ``argv`` (``sys.argv`` when None). ``specula train saliency ...`` hands the
        exporter its arguments with the task word still in front (training/cli.py picks the
        exporter by the manifest's kind), so that word is dropped here. Torch runs on one
        thread: the setting every shipped saliency graph and the parity figures in its
        manifest entry were made with."""
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:1] == ["saliency"]:
            argv = argv[1:]
        a = ap.parse_args(argv)
        torch.set_num_threads(1)
        model_dir = Path(a.model_dir)
        manifest = json.loads((model_dir / "manifest.json").read_text())
        return cls(a, model_dir, manifest, sha256_file(model_dir / manifest["file"]))

    @property
    def model_onnx(self) -> Path:
        return self.model_dir / self.manifest["file"]

    def checkpoint(self) -> Path:
        """``--checkpoint``, else the checkpoint the manifest's training provenance names."""
        if self.args.checkpoint:
            return Path(self.args.checkpoint)
        return checkpoint_of(self.model_dir)

    def ship(self, entry: dict[str, Any], report: dict[str, Any]) -> int:
        """Add ``entry`` to the manifest, check model.onnx is unchanged, and print the run's
        summary (``report`` between the saliency graph's sha256 and that check); the exit
        status."""
        add_to_manifest(self.model_dir, entry)
        assert sha256_file(self.model_onnx) == self.sha_before, "model.onnx changed"
        print(json.dumps({"model_dir": str(self.model_dir),
                          "saliency_sha256": entry["sha256"][:12], **report,
                          "model_onnx_sha256_unchanged": True}, indent=1))
        return 0


def add_to_manifest(model_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Add ``saliency`` to manifest.json in place; refuses if model.onnx's sha256 changed."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    digest = sha256_file(model_dir / manifest["file"])
    if digest != manifest["sha256"]:
        raise RuntimeError(f"{model_dir}: model.onnx sha256 {digest} != manifest "
                           f"{manifest['sha256']} — refusing to add saliency to a stale manifest")
    manifest["saliency"] = entry
    write_manifest(model_dir, manifest)
    return manifest


def checkpoint_of(model_dir: Path) -> Path:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    ck = manifest.get("training", {}).get("checkpoint")
    if not ck:
        raise SystemExit(f"{model_dir}/manifest.json names no training.checkpoint")
    path = Path(ck)
    if not path.is_absolute():
        path = REPO / path
    if not path.exists():  # a checkout moved: look for the same run under this repo's runs/
        alt = REPO / "runs" / path.parent.name / path.name
        if not alt.exists():
            raise SystemExit(f"checkpoint {ck} not found")
        path = alt
    return path
