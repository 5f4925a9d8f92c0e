"""A tiny spectrum classifier that honours the models/README.md contract, for tests.

A real (if untrained) network exported by torch.onnx, so the service runs real ONNX graphs and
real outputs in tests — nothing is faked. A two-member ensemble makes ``epistemic`` non-trivial;
different seeds give different versions, so a test can tell which version answered.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from service.spectra import DEFAULT_GRID, PREPROCESS_VERSION

LABELS = [
    {"name": "GALAXY", "top": "GALAXY", "subtype": None},
    {"name": "QSO", "top": "QSO", "subtype": None},
    {"name": "STAR:A", "top": "STAR", "subtype": "A"},
    {"name": "STAR:F", "top": "STAR", "subtype": "F"},
    {"name": "STAR:K", "top": "STAR", "subtype": "K"},
    {"name": "STAR:M", "top": "STAR", "subtype": "M"},
]
TOP_CLASSES = ["GALAXY", "QSO", "STAR"]
OUTPUTS = ["probs", "entropy", "epistemic", "z", "z_sigma"]


class TinyClassifier(nn.Module):
    def __init__(self, n_labels: int = len(LABELS), members: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(2, 8, kernel_size=8, stride=4, padding=2), nn.ReLU(), nn.AvgPool1d(64),
            nn.Flatten())
        self.heads = nn.ModuleList(nn.Linear(8 * 15, n_labels) for _ in range(members))
        self.redshift = nn.Linear(8 * 15, 2)

    def forward(self, x: torch.Tensor):
        h = self.features(x)
        p = torch.softmax(torch.stack([head(h) for head in self.heads]), dim=-1)
        probs = p.mean(0)
        entropy = -(probs * torch.log(probs + 1e-12)).sum(-1)
        member_entropy = -(p * torch.log(p + 1e-12)).sum(-1).mean(0)
        zz = nn.functional.softplus(self.redshift(h))
        return probs, entropy, entropy - member_entropy, zz[:, 0], zz[:, 1] + 1e-3


def export_onnx(seed: int, npix: int) -> bytes:
    torch.manual_seed(seed)
    model = TinyClassifier().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter is deprecated, and enough here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.randn(2, 2, npix),), buf, input_names=["spectrum"],
            output_names=OUTPUTS, dynamic_axes={n: {0: "N"} for n in ["spectrum", *OUTPUTS]},
            dynamo=False)
    return buf.getvalue()


def write_tiny_model(root: Path, name: str = "spectrum_classifier", version: int = 1, *,
                     seed: int | None = None, preprocess_version: str = PREPROCESS_VERSION,
                     sha256: str | None = None) -> Path:
    """models/<name>/<version>/{model.onnx, manifest.json}; returns the version directory."""
    grid = DEFAULT_GRID
    onnx = export_onnx(version if seed is None else seed, grid.npix)
    vdir = Path(root) / name / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.onnx").write_bytes(onnx)
    k = len(LABELS)
    manifest = {
        "name": name, "version": version, "kind": "spectrum-classifier", "file": "model.onnx",
        "sha256": sha256 or hashlib.sha256(onnx).hexdigest(),
        "inputs": [{"name": "spectrum", "dtype": "float32", "shape": [-1, 2, grid.npix]}],
        "outputs": [{"name": "probs", "dtype": "float32", "shape": [-1, k]}]
        + [{"name": o, "dtype": "float32", "shape": [-1]} for o in OUTPUTS[1:]],
        "labels": LABELS, "top_classes": TOP_CLASSES, "grid": grid.to_manifest(),
        "preprocess_version": preprocess_version,
        "training": {"note": "untrained test model (tests/support/tiny_classifier.py)",
                     "seed": seed},
        "metrics": {},
    }
    (vdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return vdir
