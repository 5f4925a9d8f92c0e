"""The default saliency target and the figure helpers, without a service.

The rule of ``target=auto``: explain the decision that is still open. The figures: line
labels never cover each other however crowded the lines are, and the flux unit is the file's.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.api.figure_labels import (
    SDSS_FLUX_UNIT,
    UNKNOWN_FLUX_UNIT,
    assign_rows,
    flux_unit,
    parameter_symbol,
)
from service.api.plots import LINE_LABEL_GID, png, spectrum_figure
from service.inference.postprocess import LabelMap
from service.inference.saliency import SATURATED, auto_target
from service.spectra import DEFAULT_GRID, make_spectrum
from training.spectra.labels import LABELS, TOP_CLASSES


@pytest.fixture(scope="module")
def labels() -> LabelMap:
    m = np.array([[lab["top"] == t for t in TOP_CLASSES] for lab in LABELS], np.float32)
    return LabelMap([lab["name"] for lab in LABELS], [lab["subtype"] for lab in LABELS],
                    list(TOP_CLASSES), m)


def probs_of(labels: LabelMap, **p: float) -> np.ndarray:
    out = np.zeros(len(labels.labels))
    for name, v in p.items():
        out[labels.labels.index(name.replace("_", ":"))] = v
    return out


def test_auto_explains_an_uncertain_class_itself(labels):
    assert auto_target(probs_of(labels, QSO=0.7, GALAXY=0.3), labels) == ("class", "QSO")
    # P(STAR) = 0.98 summed over its subtypes is still an open class decision
    p = probs_of(labels, STAR_A=0.5, STAR_F=0.48, GALAXY=0.02)
    assert auto_target(p, labels) == ("class", "STAR")


def test_auto_explains_the_subtype_of_a_saturated_star(labels):
    p = probs_of(labels, STAR_A=0.44, STAR_F=0.56 - 1e-5, GALAXY=1e-5)
    assert p @ labels.membership[:, TOP_CLASSES.index("STAR")] >= SATURATED
    assert auto_target(p, labels) == ("label", "STAR:F")


def test_auto_explains_the_redshift_of_a_saturated_qso_or_galaxy(labels):
    assert auto_target(probs_of(labels, QSO=0.9999, GALAXY=1e-4), labels) == ("redshift",
                                                                              "redshift")
    assert auto_target(probs_of(labels, GALAXY=0.995, QSO=0.005), labels) == ("redshift",
                                                                               "redshift")


def test_assign_rows_never_overlaps_and_keeps_the_first_labels():
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 300, 40)
    widths = rng.uniform(10, 40, 40)
    rows = assign_rows(centres, widths, 3, pad=2.0)
    assert rows[0] == 0 and rows[1] is not None
    placed = [(c - w / 2, c + w / 2, r) for c, w, r in zip(centres, widths, rows) if r is not None]
    for i, (a0, a1, ra) in enumerate(placed):
        for b0, b1, rb in placed[i + 1:]:
            assert ra != rb or a1 <= b0 or b1 <= a0
    assert None in rows  # 40 labels of ~25 px in 300 px × 3 rows: some are dropped


def test_flux_unit_is_the_files_or_the_formats_or_as_sent():
    assert flux_unit({"format": "sdss-spec"}) == SDSS_FLUX_UNIT
    assert flux_unit({"format": "eso-sdp", "flux_unit": "erg.cm**(-2).s**(-1).angstrom**(-1)"}
                     ) == "erg.cm**(-2).s**(-1).angstrom**(-1)"
    assert flux_unit({"format": "arrays"}) == UNKNOWN_FLUX_UNIT
    assert parameter_symbol("HII_EFF_FACTOR") == "ζ"
    assert parameter_symbol("SOMETHING_NEW") == "SOMETHING_NEW"


def boxes_overlap(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


@pytest.mark.parametrize(("cls", "z"), [("GALAXY", 0.1), ("QSO", 1.2), ("STAR", 0.0)])
def test_crowded_line_labels_do_not_overlap(cls, z):
    """A galaxy at z = 0.1 puts 15 lines in view, several within a label's width."""
    grid = DEFAULT_GRID.wavelength
    rng = np.random.default_rng(0)
    s = make_spectrum(grid, 100 + rng.normal(0, 1, grid.size), np.full(grid.size, 1.0),
                      meta={"format": "arrays", "object_id": "synthetic"})
    fig = spectrum_figure(s, saliency=rng.normal(size=grid.size), grid_wavelength=grid,
                          prediction={"class": cls, "class_probability": 0.8, "label": cls,
                                      "label_probability": 0.8, "z": z, "z_sigma": 0.01},
                          explained={"target": cls, "asked": "top", "scale": "probability",
                                     "value": 0.8},
                          method={"name": "gradient"}, model="m", version=1)
    renderer = fig.canvas.get_renderer()
    labels = [t for a in fig.axes for t in a.texts if t.get_gid() == LINE_LABEL_GID]
    assert len(labels) >= 4
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not boxes_overlap(a, b)
    flux_ax = next(a for a in fig.axes if "flux density" in a.get_ylabel())
    assert UNKNOWN_FLUX_UNIT in flux_ax.get_ylabel()  # arrays: drawn as sent, and said so
    assert png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
