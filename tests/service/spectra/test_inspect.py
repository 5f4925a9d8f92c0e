"""`specula inspect`: one JSON line per spectrum, an error line per unreadable file."""

from __future__ import annotations

import io
import json

from service.cli import main as cli_main
from service.inspect import main
from service.spectra.readers.exposure import write_exposure
from tests.support.spectrum_writers import sdss_like_spectrum


def _run(argv):
    out = io.StringIO()
    rc = main(argv, out=out)
    return rc, [json.loads(line) for line in out.getvalue().splitlines()]


def test_real_files_and_a_bad_one(sdss_spec_path, desi_paths, tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(sdss_spec_path.read_bytes()[:20000])
    coadd = desi_paths["coadd-sv3-dark-26065.fits"]
    rc, lines = _run([str(sdss_spec_path), str(bad), str(coadd), "--output", "jsonl"])
    assert rc == 1  # one file failed; the others were still described
    sdss, err, *desi = lines
    assert sdss == {
        "file": str(sdss_spec_path), "reader": "sdss-spec", "object_id": "1198-52669-0063",
        "npix": 3835, "wavelength_min": sdss["wavelength_min"],
        "wavelength_max": sdss["wavelength_max"], "masked_fraction": sdss["masked_fraction"],
        "grid_coverage": sdss["grid_coverage"], "pipeline": sdss["pipeline"]}
    assert sdss["pipeline"]["class"] == "STAR" and sdss["pipeline"]["subclass"] == "A0"
    assert 3799 < sdss["wavelength_min"] < 3800 and 9185 < sdss["wavelength_max"] < 9186
    assert 0 < sdss["masked_fraction"] < 0.01 and 0.93 < sdss["grid_coverage"] < 0.95
    assert err["file"] == err["source"] == err["error"]["source"] == str(bad)
    assert err["error"]["code"] == "corrupt_file" and err["error"]["detail"]
    assert len(desi) == 5 and all(d["reader"] == "desi-coadd" for d in desi)
    assert all(d["grid_coverage"] == 1.0 for d in desi)


def test_exposure_gives_a_line_per_fibre(tmp_path):
    p = tmp_path / "exp.fits"
    fibres = [sdss_like_spectrum(seed=i) for i in range(7)]
    p.write_bytes(write_exposure(fibres))
    rc, lines = _run([str(p)])
    assert rc == 0 and len(lines) == 7
    assert {d["reader"] for d in lines} == {"specula-exposure"}


def test_missing_file_and_text_output(tmp_path, capsys):
    out = io.StringIO()
    rc = main([str(tmp_path / "nope.fits"), "--output", "text"], out=out)
    assert rc == 1 and "ERROR file_not_found: no such file" in out.getvalue()


def test_cli_dispatches_to_inspect(sdss_spec_path, capsys):
    assert cli_main(["inspect", str(sdss_spec_path)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["object_id"] == "1198-52669-0063"
