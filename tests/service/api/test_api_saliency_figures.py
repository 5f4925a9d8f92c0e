"""The saliency figures a scientist is shown, over real HTTP, with the shipped models and the
real files (../shared/data): spec-1198-52669-0063.fits (an SDSS A0 star) and simrun_0.h5 (a
21cmFAST lightcone that carries its own parameters).

The service answers JSON and PNG; the tests rebuild the Figure from the JSON answer with the
function the service draws with (``plots.spectrum_figure`` / ``plots.lightcone_figure``) and
read it: axis labels, colour bars, text positions. For the spectrum they also check that the
PNG the service sent is that figure.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from service.api.figure_labels import SDSS_FLUX_UNIT
from service.api.plots import (
    LINE_LABEL_GID,
    TRUE_VALUE_GID,
    lightcone_figure,
    png,
    spectrum_figure,
)
from service.lightcones import read_lightcone
from service.lightcones.preprocess import LightconeGrid, preprocess
from service.spectra import Source, read_spectra

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[3]
MODELS = REPO / "models"
SPECTRUM_URL, LIGHTCONE_URL = "/v1/spectra:saliency", "/v1/lightcones:saliency"


def latest_with_saliency(name: str) -> Path:
    """The newest shipped version of ``name`` that ships a saliency graph."""
    versions = sorted((p for p in (MODELS / name).iterdir() if p.name.isdigit()),
                      key=lambda p: int(p.name))
    with_graph = [p for p in versions
                  if "saliency" in json.loads((p / "manifest.json").read_text())]
    if not with_graph:
        pytest.skip(f"no shipped {name} version has a saliency graph")
    return with_graph[-1]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("figure-models")
    for name in ("spectrum_classifier", "lightcone_regressor"):
        v = latest_with_saliency(name)
        shutil.copytree(v, root / name / v.name)
    return root


@pytest.fixture
def svc(repo, start_service):
    return start_service(repo)


def all_text(fig) -> str:
    texts = [t.get_text() for t in fig.texts]
    for a in fig.axes:
        texts += [a.get_xlabel(), a.get_ylabel(), a.get_title()]
        texts += [t.get_text() for t in a.texts]
        leg = a.get_legend()
        if leg is not None:
            texts += [t.get_text() for t in leg.get_texts()]
    return "\n".join(texts)


def boxes_overlap(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def test_spectrum_default_target_and_figure(svc, sdss_spec_path):
    files = {"files": (sdss_spec_path.name, sdss_spec_path.read_bytes(), "application/fits")}
    r = svc.client.post(SPECTRUM_URL, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    (res,) = body["results"]
    pred, explained = res["prediction"], res["explained"]

    # the shipped model is sure it is a star (P ≥ 0.99) and unsure between A and F: the default
    # explains that open decision, the subtype, not the saturated class
    assert pred["class"] == "STAR" and pred["class_probability"] >= 0.99
    assert explained["asked"] == "auto" and explained["target"] == pred["label"]
    assert explained["target"].startswith("STAR:")
    assert explained["value"] == pytest.approx(pred["label_probability"], rel=1e-4)
    # an explicit target is explained as asked
    top = svc.client.post(SPECTRUM_URL, files=files, params={"target": "top"}).json()
    assert top["results"][0]["explained"]["target"] == "STAR"
    z = svc.client.post(SPECTRUM_URL, files=files, params={"target": "redshift"}).json()
    assert z["results"][0]["explained"]["target"] == "redshift"

    spectrum = read_spectra(Source.from_path(sdss_spec_path))[1][0]
    fig = spectrum_figure(spectrum, saliency=np.array(res["saliency"]["flux"], np.float32),
                          grid_wavelength=np.array(body["wavelength"], np.float64),
                          prediction=pred, explained=explained, method=res["method"],
                          model=body["model"], version=body["version"], source=res["source"])
    text = all_text(fig)

    # the flux axis says its unit: SDSS flux as read from the file, 1e-17 erg/s/cm²/Å
    flux_ax = next(a for a in fig.axes if "flux density" in a.get_ylabel())
    assert SDSS_FLUX_UNIT in flux_ax.get_ylabel() and "erg s⁻¹ cm⁻² Å⁻¹" in SDSS_FLUX_UNIT
    # a ±1σ band from the inverse variance, drawn (non-empty) on the flux axis
    bands = [c for c in flux_ax.collections if c.get_label() == "±1σ (from ivar)"]
    assert bands and sum(len(p.vertices) for p in bands[0].get_paths()) > 1000
    # the |S| strip has a colour bar that says what the colour is
    strip = next(a for a in fig.axes if a.get_ylabel() == "|S|")
    (mesh,) = strip.collections
    assert mesh.colorbar is not None and "|S| / max|S|" in mesh.colorbar.ax.get_ylabel()
    # the star's lines are labelled, and no label covers another
    labels = [t for a in fig.axes for t in a.texts if t.get_gid() == LINE_LABEL_GID]
    assert {"Hα", "Hβ", "Hγ", "Na D"} <= {t.get_text() for t in labels}
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not boxes_overlap(a, b)
    # what was explained and why, and the uploaded file's name
    assert f"P({explained['target']})" in text and "saturated" in text
    assert sdss_spec_path.name in text

    # the PNG the service sends is this figure (same size, same pixels up to the float32
    # wavelength grid of the JSON answer)
    served = svc.client.post(SPECTRUM_URL, files=files, params={"out": "png"})
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    a = mpimg.imread(io.BytesIO(served.content), format="png")
    b = mpimg.imread(io.BytesIO(png(fig)), format="png")
    assert a.shape == b.shape
    assert float(np.abs(a - b).mean()) < 0.01


SIMRUN_TARGET = "HII_EFF_FACTOR"


def lightcone_post(svc, path: Path, **params):
    return svc.client.post(LIGHTCONE_URL, content=path.read_bytes(),
                           params={"target": SIMRUN_TARGET, **params},
                           headers={"content-type": "application/octet-stream",
                                    "x-filename": path.name})


def lightcone_answer_and_figure(svc, path: Path, repo: Path):
    """The service's JSON answer for the file, and the figure drawn from it with everything
    the answer says (the file's parameters, the preprocessing notes, the input scaling)."""
    r = lightcone_post(svc, path, out="json")
    assert r.status_code == 200, r.text
    body = r.json()
    # the cube as the model saw it, from the real file and the model's own grid
    manifest = json.loads(next((repo / "lightcone_regressor").glob("*/manifest.json"))
                          .read_text())
    grid = LightconeGrid.from_manifest(manifest["grid"])
    _, lc = read_lightcone(Source(path.read_bytes(), name=path.name))
    cube_mk = preprocess(lc, grid, source=path.name,
                         version=manifest["preprocess_version"]).x[0] * grid.scale_mk
    fig = lightcone_figure(
        cube_mk=cube_mk, saliency=np.array(body["saliency"], np.float32),
        frequencies_mhz=np.array(body["grid"]["frequencies_mhz"], np.float64),
        cell_mpc=body["grid"]["cell_mpc"], explained=body["explained"],
        estimate=body["parameters"][SIMRUN_TARGET], method=body["method"],
        model=body["model"], version=body["version"], source=path.name,
        true_value=body["file_parameters"][SIMRUN_TARGET], notes=body["notes"],
        scale_mk=grid.scale_mk)
    return body, fig, grid


def test_lightcone_figure_of_a_simulator_file(svc, shared_data, repo):
    path = shared_data / "21cmfast" / "simrun_0.h5"
    body, fig, grid = lightcone_answer_and_figure(svc, path, repo)
    truth = body["file_parameters"][SIMRUN_TARGET]
    assert truth == pytest.approx(29.385, rel=1e-3)
    title = fig._suptitle.get_text()
    text = " ".join((all_text(fig) + "\n" + title).split())  # wrapped lines joined

    assert "ζ" in title and SIMRUN_TARGET not in text
    markers = [ln for a in fig.axes for ln in a.lines if ln.get_gid() == TRUE_VALUE_GID]
    assert len(markers) == 1 and markers[0].get_xdata()[0] == pytest.approx(truth)
    assert f"{truth:.4g}" in title
    assert path.name in text and "body" not in text.split()
    # the sky window used, how the file was resampled onto it, and which patch is explained
    assert "64 × 64 Mpc" in text and "5 Mpc → 4 Mpc" in text and "150×150 Mpc" in text
    assert "first of 9 sky patches" in text
    # what the scale is: the fixed input scaling the gradient is taken against
    assert f"x = T_b / {grid.scale_mk:g} mK" in text

    # the service draws a PNG of it
    served = lightcone_post(svc, path, out="png")
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert mpimg.imread(io.BytesIO(served.content), format="png").shape[1] > 1000


def worst_row_difference(a: bytes, b: bytes) -> float:
    """The largest mean |difference| of one pixel row between two PNGs of the same size: a
    line of text that one has and the other lacks stands out, sub-pixel shifts do not."""
    x, y = (mpimg.imread(io.BytesIO(p), format="png") for p in (a, b))
    assert x.shape == y.shape
    return float(np.abs(x - y).mean(axis=(1, 2)).max())


def test_served_lightcone_png_is_the_full_figure(svc, shared_data, repo):
    path = shared_data / "21cmfast" / "simrun_0.h5"
    _, fig, _ = lightcone_answer_and_figure(svc, path, repo)
    served = lightcone_post(svc, path, out="png")
    assert served.status_code == 200
    assert worst_row_difference(served.content, png(fig)) < 0.02
