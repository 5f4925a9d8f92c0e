"""The label taxonomy: 13 flat labels, the three top classes they roll up into.

The simulator draws labels from it; training, export (the manifest's labels) and evaluation
read it. Flat 13-way softmax: the top-class probability is the sum of its labels
(models/README.md). Flat rather than hierarchical because the contract wants one distribution
over labels, and a flat softmax makes "P(STAR) = Σ P(STAR:*)" exact by construction with one
head.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STAR_SUBTYPES = ["O", "B", "A", "F", "G", "K", "M", "L", "WD", "CV", "CARBON"]
LABELS: list[dict[str, Any]] = (
    [{"name": "GALAXY", "top": "GALAXY", "subtype": None},
     {"name": "QSO", "top": "QSO", "subtype": None}]
    + [{"name": f"STAR:{s}", "top": "STAR", "subtype": s} for s in STAR_SUBTYPES]
)
LABEL_NAMES = [lab["name"] for lab in LABELS]
TOP_CLASSES = ["GALAXY", "QSO", "STAR"]
TOP_OF_LABEL = np.array([TOP_CLASSES.index(lab["top"]) for lab in LABELS])
