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

from .repository import Manifest

# z_warning bits of a model with an in-graph template fit (training/redshift_graph.py builds
# the graph from these): what a pipeline routes on, as it routes on SDSS's ZWARNING
Z_WARNING_BITS: dict[int, str] = {
    1: "z_ambiguous",  # a second, separate χ² minimum within Δχ² < 9
    2: "z_poor_fit",  # χ²/dof of the template fit above the poor-fit threshold
    4: "z_no_fit",  # no template fit (STAR: z is the z = 0 prior)
    8: "z_no_signal",  # the best template fit explains no more than noise would
}
Z_WARNING_BIT: dict[str, int] = {name: bit for bit, name in Z_WARNING_BITS.items()}
# "1 z_ambiguous, 2 z_poor_fit, ...": for the field and column descriptions
Z_WARNING_TEXT = ", ".join(f"{bit} {name}" for bit, name in Z_WARNING_BITS.items())
# outputs passed through as they are when a model has them
OPTIONAL_FLOATS = ("z_rchi2",)


def z_warning_names(bits: int) -> list[str]:
    return [name for bit, name in Z_WARNING_BITS.items() if bits & bit]


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
