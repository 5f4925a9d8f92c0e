"""`specula classify`: one JSON line per spectrum; a bad file is a line with its code."""

from __future__ import annotations

import json

from service.archive.classify import main


def test_classify_real_fits_and_keep_going_after_bad_file(model_repo, sdss_spec_path, tmp_path,
                                                          capsys):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\0" * 50)
    out = tmp_path / "out.jsonl"
    rc = main([str(sdss_spec_path), str(bad), str(sdss_spec_path), "--repository",
               str(model_repo), "--out", str(out)])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert rc == 1  # a file failed
    assert len(lines) == 3
    good, err, again = lines
    assert good["object_id"] == "1198-52669-0063" and good["format"] == "sdss-spec"
    assert good["class"] in {"GALAXY", "QSO", "STAR"} and good["version"] == 2
    assert set(good) >= {"probabilities", "entropy", "epistemic", "z", "z_sigma", "warnings"}
    assert err["source"] == str(bad) and err["error"]["code"] == "corrupt_file"
    assert again["probabilities"] == good["probabilities"]
    assert "3/3" in capsys.readouterr().err  # the progress bar went to stderr


def test_pinned_version_and_json_array_output(model_repo, sdss_spec_path, capsys):
    rc = main([str(sdss_spec_path), "--repository", str(model_repo), "--version", "1",
               "--output", "json", "--quiet"])
    (item,) = json.loads(capsys.readouterr().out)
    assert rc == 0 and item["version"] == 1
