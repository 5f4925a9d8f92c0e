"""`specula classify --output x.fits|x.ecsv|x.vot`: one astropy table with units, the same
numbers as the JSON lines of the same run, the file's own SPECOBJ CLASS/Z beside them."""

from __future__ import annotations

import json
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from service.archive.classify import main
from service.inference.columns import probability_columns
from service.inference.postprocess import LabelMap
from service.inference.repository import ModelRepository
from tests.support.spectrum_writers import sdss_like_spectrum, write_sdss_spec

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "models"
# the version that answers when none is named, as the repository itself resolves it
LATEST = ModelRepository(SHIPPED).resolve("spectrum_classifier", None)
FORMATS = {".fits": "fits", ".fit": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable",
           ".xml": "votable"}


@pytest.fixture(scope="module")
def shipped_models() -> Path:
    """The served model (v4 on: in-graph template fit, so z_warning/z_rchi2 are there)."""
    if not (SHIPPED / "spectrum_classifier" / "4" / "model.onnx").exists():
        pytest.skip("shipped spectrum_classifier v4 not present")
    return SHIPPED


def run(files: list[Path], repo: Path, table: Path, tmp_path: Path) -> tuple[int, list[dict]]:
    jsonl = tmp_path / "same-run.jsonl"
    rc = main([*map(str, files), "--repository", str(repo), "--output", str(table),
               "--out", str(jsonl), "--quiet"])
    return rc, [json.loads(x) for x in jsonl.read_text().splitlines()]


def f32(x: float) -> float:
    return float(np.float32(x))


@pytest.mark.parametrize("ext", list(FORMATS))
def test_table_matches_json_lines_of_the_same_run(ext, shipped_models, sdss_spec_path,
                                                  tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\0" * 50)
    table_path = tmp_path / f"results{ext}"
    rc, lines = run([sdss_spec_path, bad], shipped_models, table_path, tmp_path)
    assert rc == 1 and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    t = Table.read(table_path, format=FORMATS[ext])
    assert len(t) == len(lines) == 2
    good, err = lines
    row = t[0]

    # one column per class and per label, the API's numbers (float32 model outputs lossless)
    assert {"p_GALAXY", "p_QSO", "p_STAR", "p_STAR_A", "p_STAR_F", "p_STAR_CARBON"} <= set(
        t.colnames)
    assert "p_GALAXY_label" not in t.colnames  # label GALAXY alone in its class: same number
    for cls, p in good["class_probabilities"].items():
        assert row[f"p_{cls}"] == p
    for label, p in good["probabilities"].items():
        if label not in good["class_probabilities"]:
            assert row["p_" + label.replace(":", "_")] == f32(p)
    for k in ("entropy", "epistemic", "z", "z_sigma", "z_rchi2", "label_probability"):
        assert row[k] == f32(good[k])
    assert row["class_probability"] == good["class_probability"]
    for k in ("source", "object_id", "format", "class", "subtype", "label", "model"):
        assert row[k] == good[k]
    assert row["version"] == good["version"] == LATEST and row["status"] == "ok"
    assert row["z_warning"] == good["z_warning"] and row["z_warnings"] == ",".join(
        good["z_warnings"])
    # no flag names (this bright star has none) is an empty string: read back masked
    flags = "" if row["quality_flags"] is np.ma.masked else row["quality_flags"]
    assert row["quality"] == good["quality"] and flags == ",".join(good["quality_flags"])

    # the file's own SPECOBJ: an A0 star at z ≈ 0, beside the prediction
    assert (good["file_class"], good["file_subclass"]) == ("STAR", "A0")
    assert (row["file_class"], row["file_subclass"]) == ("STAR", "A0")
    assert row["file_z"] == good["file_z"] and abs(good["file_z"]) < 1e-3
    assert row["file_zwarning"] == good["file_zwarning"] == 0

    # the unreadable file is a row too, its predictions null
    assert err["error"]["code"] == "corrupt_file"
    assert (t["status"][1], t["error_code"][1], t["source"][1]) == ("error", "corrupt_file",
                                                                    str(bad))
    for k in ("p_STAR", "z", "file_z", "z_warning"):
        assert t[k].mask[1], k
    for k in ("class", "file_class"):  # astropy reads a null VOTable string as ""
        assert t[k].mask[1] if FORMATS[ext] != "votable" else t[k][1] == "", k

    # units and descriptions: probabilities, z and the nats of entropy are dimensionless
    assert "nats" in t["entropy"].description and "nats" in t["epistemic"].description
    assert t["p_STAR_A"].description == "probability of label STAR:A"
    if FORMATS[ext] != "fits":  # FITS writes no TUNIT for a dimensionless quantity
        for k in ("z", "z_sigma", "entropy", "epistemic", "p_STAR", "p_STAR_A", "file_z"):
            assert t[k].unit == u.dimensionless_unscaled, k
    if FORMATS[ext] != "votable":  # VOTable keeps no table-level meta
        assert (t.meta["MODEL"], t.meta["MODELVER"]) == ("spectrum_classifier", LATEST)


def test_model_without_template_fit_and_file_without_specobj_give_nulls(model_repo, tmp_path):
    plain = tmp_path / "spec-0001-50000-0001.fits"
    plain.write_bytes(write_sdss_spec(sdss_like_spectrum(seed=3), variant="coadd-only"))
    table_path = tmp_path / "results.ecsv"
    rc, (line,) = run([plain], model_repo, table_path, tmp_path)
    (row,) = Table.read(table_path)
    assert rc == 0 and "error" not in line
    assert "z_warning" not in line and "file_class" not in line
    for k in ("z_warning", "z_warnings", "z_rchi2", "file_class", "file_subclass", "file_z",
              "file_zwarning"):
        assert row.columns[k].mask[0], k
    assert row["class"] == line["class"] and row["p_STAR_A"] == f32(
        line["probabilities"]["STAR:A"])


def test_table_only_run_writes_no_json_and_out_may_name_the_table(model_repo, sdss_spec_path,
                                                                  tmp_path, capsys):
    table_path = tmp_path / "r.vot"
    rc = main([str(sdss_spec_path), "--repository", str(model_repo), "--out", str(table_path),
               "--quiet"])
    assert rc == 0 and capsys.readouterr().out == ""
    (row,) = Table.read(table_path, format="votable")
    assert row["file_class"] == "STAR" and row["class"] in {"GALAXY", "QSO", "STAR"}


def test_overwrite_is_atomic_rename(model_repo, sdss_spec_path, tmp_path):
    table_path = tmp_path / "r.fits"
    table_path.write_bytes(b"old")
    rc = main([str(sdss_spec_path), "--repository", str(model_repo), "--output",
               str(table_path), "--quiet"])
    assert rc == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["r.fits"]
    assert len(Table.read(table_path)) == 1


def test_a_label_clashing_with_a_class_of_several_labels_keeps_its_own_column():
    names = ["GALAXY", "GALAXY:SB", "STAR:A"]
    membership = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    labels = LabelMap(names, [None, "SB", "A"], ["GALAXY", "STAR"], membership)
    cols = [(c.name, c.key, c.kind) for c in probability_columns(labels)]
    assert cols == [("p_GALAXY", "GALAXY", "class"), ("p_STAR", "STAR", "class"),
                    ("p_GALAXY_label", "GALAXY", "label"), ("p_GALAXY_SB", "GALAXY:SB", "label"),
                    ("p_STAR_A", "STAR:A", "label")]


def test_fits_escapes_a_non_ascii_path_that_ecsv_keeps(model_repo, sdss_spec_path, tmp_path):
    accented = tmp_path / "étoile.fits"
    accented.write_bytes(sdss_spec_path.read_bytes())
    for ext in (".fits", ".ecsv"):
        assert main([str(accented), "--repository", str(model_repo), "--output",
                     str(tmp_path / f"r{ext}"), "--quiet"]) == 0
    assert Table.read(tmp_path / "r.ecsv")["source"][0] == str(accented)
    assert Table.read(tmp_path / "r.fits")["source"][0] == str(tmp_path / "\\xe9toile.fits")
