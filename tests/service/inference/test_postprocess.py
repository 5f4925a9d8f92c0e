"""Class = sum of its labels' probabilities; subtype = best label inside the winning class."""

from __future__ import annotations

import numpy as np

from service.inference.postprocess import LabelMap, summarise
from service.inference.repository import Manifest
from tests.support.tiny_classifier import LABELS, TOP_CLASSES


def label_map() -> LabelMap:
    m = Manifest(name="m", version=1, kind="spectrum-classifier", sha256="x", inputs=[],
                 outputs=[], labels=LABELS, top_classes=TOP_CLASSES, preprocess_version="1")
    return LabelMap.from_manifest(m)


def outputs(probs):
    p = np.asarray(probs, dtype=np.float32)
    n = len(p)
    return {"probs": p, "entropy": np.arange(n, dtype=np.float32),
            "epistemic": np.full(n, 0.5, np.float32), "z": np.full(n, 1.5, np.float32),
            "z_sigma": np.full(n, 0.1, np.float32)}


def test_top_class_sums_labels_even_when_single_best_label_is_elsewhere():
    # GALAXY alone (0.4) beats every single star label, but STAR's labels sum to 0.6
    (r,) = summarise(outputs([[0.40, 0.0, 0.15, 0.15, 0.15, 0.15]]), label_map())
    assert r["class"] == "STAR"
    assert np.isclose(r["class_probability"], 0.6)
    assert r["label"].startswith("STAR:") and r["subtype"] in {"A", "F", "K", "M"}
    assert np.isclose(sum(r["class_probabilities"].values()), 1.0)


def test_subtype_is_best_label_within_class_and_rows_are_independent():
    rows = summarise(outputs([[0.1, 0.1, 0.1, 0.5, 0.1, 0.1],
                              [0.7, 0.1, 0.05, 0.05, 0.05, 0.05]]), label_map())
    assert [(r["class"], r["subtype"], r["label"]) for r in rows] == [
        ("STAR", "F", "STAR:F"), ("GALAXY", None, "GALAXY")]
    assert [r["entropy"] for r in rows] == [0.0, 1.0]
    assert rows[1]["z"] == 1.5 and rows[1]["z_sigma"] == np.float32(0.1)
