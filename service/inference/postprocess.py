"""Model outputs → what an astronomer reads: class, subtype, uncertainty, redshift, warnings.

The network predicts over fine labels (``STAR:A``, ``QSO``, ...). The top class probability
is the *sum* of its labels' probabilities (a star of unclear subtype is still clearly a star),
and the subtype is the most probable label inside the winning top class — never a label from
another class. Uncertainties and redshift are passed through as the model computed them
(contract in models/README.md). Vectorised over the rows of one request; plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.spectra.zwarning import z_warning_names

from .repository import Manifest

# outputs passed through as they are when a model has them
OPTIONAL_FLOATS = ("z_rchi2",)


@dataclass(frozen=True)
class LabelMap:
    """How fine labels roll up into top classes, built once per model version."""

    labels: list[str]
    subtypes: list[str | None]
    top_classes: list[str]
    membership: np.ndarray  # (K, T) float32, 1 where label k belongs to top class t

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> LabelMap:
        tops = manifest.top_classes or sorted({lab.top for lab in manifest.labels})
        index = {t: i for i, t in enumerate(tops)}
        m = np.zeros((len(manifest.labels), len(tops)), dtype=np.float32)
        for k, lab in enumerate(manifest.labels):
            m[k, index[lab.top]] = 1.0
        return cls([lab.name for lab in manifest.labels],
                   [lab.subtype for lab in manifest.labels], tops, m)


def summarise(outputs: dict[str, np.ndarray], labels: LabelMap) -> list[dict[str, Any]]:
    """One dict per row of ``outputs`` (probs, entropy, epistemic, z, z_sigma, and
    ``z_warning`` / ``z_rchi2`` where the model computes them)."""
    probs = outputs["probs"].astype(np.float64)
    top_probs = probs @ labels.membership
    top = top_probs.argmax(axis=1)
    # best label inside the winning class: mask out every other class's labels
    inside = labels.membership[:, top].T > 0  # (N, K)
    best = np.where(inside, probs, -1.0).argmax(axis=1)
    cols = {k: outputs[k].reshape(-1).tolist() for k in ("entropy", "epistemic", "z", "z_sigma")}
    extra = {k: outputs[k].reshape(-1).tolist() for k in OPTIONAL_FLOATS if k in outputs}
    zwarn = outputs["z_warning"].reshape(-1).tolist() if "z_warning" in outputs else None
    probs_l, top_l = probs.tolist(), top_probs.tolist()
    out = []
    for i in range(probs.shape[0]):
        t, b = int(top[i]), int(best[i])
        out.append({
            "class": labels.top_classes[t],
            "class_probability": top_l[i][t],
            "subtype": labels.subtypes[b],
            "label": labels.labels[b],
            "label_probability": probs_l[i][b],
            "class_probabilities": dict(zip(labels.top_classes, top_l[i])),
            "probabilities": dict(zip(labels.labels, probs_l[i])),
            "entropy": cols["entropy"][i],
            "epistemic": cols["epistemic"][i],
            "z": cols["z"][i],
            "z_sigma": cols["z_sigma"][i],
        })
        if zwarn is not None:
            out[-1].update(z_warning=int(zwarn[i]), z_warnings=z_warning_names(int(zwarn[i])))
        out[-1].update({k: v[i] for k, v in extra.items()})
    return out
