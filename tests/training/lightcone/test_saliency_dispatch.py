"""`specula train saliency --model-dir DIR` picks the exporter by the manifest's kind."""

from __future__ import annotations

import json
from pathlib import Path

from training.cli import saliency_module

REPO = Path(__file__).resolve().parents[3]


def test_lightcone_model_gets_the_lightcone_exporter():
    assert saliency_module(["--model-dir", str(REPO / "models" / "lightcone_regressor" / "2")]) \
        == "training.lightcone.export_saliency"


def test_classifier_and_unknown_dirs_get_the_spectrum_exporter(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "spectrum-classifier"}))
    assert saliency_module(["--model-dir", str(tmp_path)]) == "training.spectra.export_saliency"
    assert saliency_module(["--model-dir", str(tmp_path / "missing")]) == \
        "training.spectra.export_saliency"
    assert saliency_module(["--help"]) == "training.spectra.export_saliency"
