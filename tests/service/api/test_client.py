"""The Python client (service/client/) against a real `specula serve` over loopback HTTP.

What a user is promised: a table with units and one column per probability, per-file errors
in place, a specutils spectrum classified like the file it came from, saliency maps and
lightcone estimates as dataclasses, an API key, and retries of a full queue that wait what
``Retry-After`` says, bounded — in the blocking and the asyncio client alike.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import astropy.units as u
import httpx
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from specutils import Spectrum

from service.client import (
    AsyncSpeculaClient,
    FileErrors,
    RetryPolicy,
    SpeculaClient,
    SpeculaError,
)

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "models"
NOTEBOOK = REPO / "docs" / "notebooks" / "quickstart.ipynb"


def test_classify_is_a_table_with_units_and_per_file_errors(service, sdss_spec_path):
    with SpeculaClient(service.url) as c:
        with pytest.warns(UserWarning, match="1 of 2 results failed"):
            t = c.classify([sdss_spec_path, b"not a spectrum at all"])
        assert list(t["status"]) == ["ok", "error"]
        ok, bad = t[0], t[1]
        assert ok["object_id"] == "1198-52669-0063" and ok["source"] == sdss_spec_path.name
        assert ok["file_class"] == "STAR"  # the file's own pipeline answer beside the model's
        probs = [n for n in t.colnames if n.startswith("p_")]
        assert {"p_GALAXY", "p_QSO", "p_STAR"} <= set(probs)
        assert ok["p_GALAXY"] + ok["p_QSO"] + ok["p_STAR"] == pytest.approx(1.0, abs=1e-5)
        assert t["z"].unit == u.dimensionless_unscaled and t["z_sigma"].unit is not None
        assert "1 sigma" in t["z_sigma"].description
        assert {"quality", "quality_flags", "z_warning", "entropy"} <= set(t.colnames)
        assert bad["error_code"] == "unknown_format" and bad["source"] == "upload-1"
        assert t["class"].mask[1] and not t["class"].mask[0]
        assert t.meta["MODEL"] == "spectrum_classifier" and t.meta["MODELVER"] == 2

        with pytest.raises(FileErrors) as err:
            c.classify([sdss_spec_path, b"junk"], version=1, on_error="raise")
        assert err.value.errors[0]["code"] == "unknown_format"
        assert err.value.table.meta["MODELVER"] == 1

        with pytest.raises(SpeculaError) as every:  # nothing to return: the request's 4xx
            c.classify(b"junk")
        assert (every.value.status, every.value.code) == (415, "unknown_format")


def test_arrays_and_specutils_spectra_are_sent_as_json_arrays(service):
    rng = np.random.default_rng(0)
    wave = np.linspace(3700.0, 9200.0, 4000)
    flux = 5.0 + rng.normal(0, 1.0, wave.size)
    spec = Spectrum(spectral_axis=wave * u.AA,
                    flux=flux * 1e-17 * u.erg / u.s / u.cm**2 / u.AA)
    with SpeculaClient(service.url) as c:
        t = c.classify([{"wavelength": wave, "flux": flux, "object_id": "mine"}, spec],
                       on_error="raise")
    assert list(t["object_id"]) == ["mine", ""]
    assert list(t["format"]) == ["arrays", "arrays"]
    np.testing.assert_allclose(t["p_STAR"][0], t["p_STAR"][1], rtol=1e-5)


def test_api_key_is_sent(start_service, api_repo, sdss_spec_path):
    svc = start_service(api_repo, api_keys='["client-key"]', version_policy="latest")
    with SpeculaClient(svc.url, api_key=None) as c, pytest.raises(SpeculaError) as err:
        c.classify(sdss_spec_path)
    assert (err.value.status, err.value.code) == (401, "unauthorized")
    with SpeculaClient(svc.url, api_key="client-key") as c:
        assert c.classify(sdss_spec_path)["status"][0] == "ok"


@pytest.fixture
def full_queue_service(start_service, api_repo):
    """A queue of 8 rows that waits 3 s to fill a batch: 8 queued rows keep it full ~3 s."""
    return start_service(api_repo, max_batch_size=16, max_queue_rows=8,
                         max_queue_delay_ms=3000, version_policy="latest")


def fill_queue(svc, pool: ThreadPoolExecutor):
    queued = pool.submit(svc.infer_rows, 8)
    svc.wait_for_metric("specula_queue_depth_rows", 8)
    return queued


def test_full_queue_is_retried_after_retry_after_sync_and_async(full_queue_service,
                                                                sdss_spec_path):
    svc = full_queue_service
    patient = RetryPolicy(attempts=10, max_wait=20)
    with ThreadPoolExecutor(1) as pool:
        queued = fill_queue(svc, pool)
        with SpeculaClient(svc.url, retry=RetryPolicy(attempts=5, max_wait=0.5)) as c, \
                pytest.raises(SpeculaError) as err:  # Retry-After: 1 > 0.5 s left to wait
            c.classify(sdss_spec_path)
        assert (err.value.status, err.value.code) == (429, "queue_full")
        with SpeculaClient(svc.url, retry=RetryPolicy(attempts=1)) as c, \
                pytest.raises(SpeculaError):
            c.classify(sdss_spec_path)
        assert svc.metric("specula_requests_total", outcome="rejected") == 2  # one send each

        t0 = time.monotonic()
        with SpeculaClient(svc.url, retry=patient) as c:
            table = c.classify(sdss_spec_path)
        waited = time.monotonic() - t0
        assert table["status"][0] == "ok"
        assert queued.result().status_code == 200
    retried = svc.metric("specula_requests_total", outcome="rejected") - 2
    assert retried >= 1
    assert waited >= retried * 1.0  # each 429 said Retry-After: 1, and was waited out

    async def classify_async():
        async with AsyncSpeculaClient(svc.url, retry=patient) as c:
            return await c.classify(sdss_spec_path)

    with ThreadPoolExecutor(1) as pool:
        queued = fill_queue(svc, pool)
        before = svc.metric("specula_requests_total", outcome="rejected")
        table = asyncio.run(classify_async())
        assert table["status"][0] == "ok" and queued.result().status_code == 200
    assert svc.metric("specula_requests_total", outcome="rejected") > before


def test_a_model_without_saliency_is_a_409(service, sdss_spec_path):
    with SpeculaClient(service.url) as c, pytest.raises(SpeculaError) as err:
        c.saliency(sdss_spec_path)
    assert (err.value.status, err.value.code) == (409, "saliency_unavailable")


@pytest.fixture
def shipped_service(start_service, tmp_path):
    """The shipped classifier and lightcone regressor (latest versions), as a user runs them."""
    repo = tmp_path / "models"
    for name in ("spectrum_classifier", "lightcone_regressor"):
        latest = max((p for p in (SHIPPED / name).iterdir() if p.name.isdigit()),
                     key=lambda p: int(p.name))
        shutil.copytree(latest, repo / name / latest.name)
    svc = start_service(repo)
    wait_until_served(svc.url, "spectrum_classifier", "lightcone_regressor")
    return svc


def wait_until_served(url: str, *models: str, timeout: float = 90) -> None:
    """/v2/health/ready is 200 once *a* model is loaded; these tests need both."""
    end = time.monotonic() + timeout
    with httpx.Client(base_url=url) as http:
        for name in models:
            while http.get(f"/v2/models/{name}/ready").status_code != 200:
                assert time.monotonic() < end, f"{name} not served in {timeout} s"
                time.sleep(0.2)


def test_specutils_saliency_and_lightcone_on_the_shipped_models(shipped_service, sdss_spec_path,
                                                                shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's unit warnings on SDSS headers
        spec = Spectrum.read(sdss_spec_path, format="SDSS-III/IV spec")

    async def run():
        async with AsyncSpeculaClient(shipped_service.url) as c:
            return await asyncio.gather(
                c.classify([sdss_spec_path, spec], on_error="raise"),
                c.saliency(sdss_spec_path, target="STAR"),
                c.infer_lightcone(shared_data / "21cmfast" / "simrun_0.h5"))

    table, maps, lc = asyncio.run(run())
    # the same spectrum, from the file and from specutils' reading of it: the same answer
    assert table["class"][0] == table["class"][1] == "STAR"
    for col in ("p_STAR", "p_STAR_A", "p_STAR_F", "z"):
        assert table[col][1] == pytest.approx(table[col][0], abs=2e-3)

    (m,) = maps
    assert m.ok and m.explained["target"] == "STAR"
    assert m.wavelength.unit == u.AA and m.flux.shape == m.weight.shape == m.wavelength.shape
    assert np.isfinite(m.flux).all() and np.abs(m.flux).max() > 0
    assert m.prediction["class"] == "STAR"

    assert lc.model == "lightcone_regressor" and lc.format == "21cmfast-h5"
    lx = lc.parameters["L_X"]
    assert lx.sigma > 0 and lx.prior[0] < lx.mean < lx.prior[1]
    assert lx.file_value == pytest.approx(39.47488252125877)  # the simulation's truth
    assert list(lc.table()["name"]) == list(lc.parameters)

    cube = np.random.default_rng(0).normal(0, 10, (16, 16, 128)).astype(np.float32)
    with SpeculaClient(shipped_service.url) as c:  # a numpy cube on the model grid
        assert set(c.infer_lightcone(cube).parameters) == set(lc.parameters)


def test_quickstart_notebook_runs(shipped_service, shared_data, monkeypatch):
    """docs/notebooks/quickstart.ipynb, every cell, against a real service (about 20 s here;
    the per-cell timeout only guards against a hang, speed belongs in benchmarks)."""
    monkeypatch.setenv("SPECULA_URL", shipped_service.url)
    monkeypatch.setenv("SPECULA_DATA", str(shared_data))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in outputs)
    assert "1198-52669-0063 (specutils)" in text and "HII_EFF_FACTOR" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the saliency plot
