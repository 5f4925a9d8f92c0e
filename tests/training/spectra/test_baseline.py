"""The chi-square baseline finds the right class and redshift of a clean, bright spectrum."""

from __future__ import annotations

import numpy as np
import pytest

from service.spectra import DEFAULT_GRID, preprocess
from training.spectra.baseline import TemplateFitter
from training.spectra.config import Effects, SimConfig
from training.spectra.labels import LABEL_NAMES
from training.spectra.simulate import simulate_one

pytestmark = pytest.mark.usefixtures("shared_data")


def test_template_fit_recovers_a_bright_galaxy_and_quasar():
    cfg = SimConfig(effects=Effects(noise=False, sky_residuals=False, outliers=False,
                                    masks=False, fluxcal=False, telluric=False, bal=False))
    xs, truth = [], []
    for label, z in (("GALAXY", 0.3), ("QSO", 2.2)):
        spec, _ = simulate_one(0, 9, 1, cfg, survey_name="boss", label=LABEL_NAMES.index(label),
                               snr=30.0, z=z)
        xs.append(preprocess(spec, DEFAULT_GRID).x)
        truth.append((LABEL_NAMES.index(label), z))
    r = TemplateFitter().fit(np.stack(xs))
    for i, (label, z) in enumerate(truth):
        assert r["label"][i] == label
        # SDSS eigenspectra vs the Redrock basis the quasar may come from: a few 1e-3 apart
        tol = 0.001 if LABEL_NAMES[label] == "GALAXY" else 0.01
        assert abs(r["z"][i] - z) / (1 + z) < tol
