"""`specula classify` and `specula inspect` report a bad file in one shape, with its true code.

Real `specula` processes on real files: the SDSS spectrum, a garbage file, an empty file, a
path that does not exist and a directory. Every failed file is one line ``{"source", "error":
{"code", "detail", "source"}}`` — the per-item shape of the HTTP results — and the run exits 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SPECULA = str(Path(sys.executable).parent / "specula")


@pytest.fixture
def bad_paths(tmp_path) -> dict[str, str]:
    """Each bad path → the code a user must see for it."""
    (tmp_path / "garbage.bin").write_bytes(b"these bytes are no spectrum \x00\x01\x02")
    (tmp_path / "empty.fits").write_bytes(b"")
    (tmp_path / "a-directory").mkdir()
    return {str(tmp_path / "garbage.bin"): "unknown_format",
            str(tmp_path / "empty.fits"): "empty_file",
            str(tmp_path / "missing.fits"): "file_not_found",
            str(tmp_path / "a-directory"): "not_a_file"}


def specula(*args: str) -> tuple[int, list[dict]]:
    done = subprocess.run([SPECULA, *args], check=False, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def failures(lines: list[dict]) -> dict[str, dict]:
    return {line["source"]: line["error"] for line in lines if "error" in line}


def assert_one_shape(errors: dict[str, dict], expected: dict[str, str]) -> None:
    assert {source: e["code"] for source, e in errors.items()} == expected
    for source, e in errors.items():
        assert set(e) == {"code", "detail", "source"} and e["source"] == source and e["detail"]


def test_classify_reports_each_bad_file_with_its_code(model_repo, sdss_spec_path, bad_paths):
    rc, lines = specula("classify", str(sdss_spec_path), *bad_paths, "--repository",
                        str(model_repo), "--quiet")
    assert rc == 1
    assert lines[0]["object_id"] == "1198-52669-0063"  # the good file is still classified
    errors = failures(lines)
    assert_one_shape(errors, bad_paths)
    directory = next(p for p, code in bad_paths.items() if code == "not_a_file")
    assert "--output results.parquet" in errors[directory]["detail"]  # how to walk it


def test_inspect_reports_bad_files_in_the_same_shape(sdss_spec_path, bad_paths):
    rc, lines = specula("inspect", str(sdss_spec_path), *bad_paths)
    assert rc == 1
    assert lines[0]["object_id"] == "1198-52669-0063" and "pipeline" in lines[0]
    assert_one_shape(failures(lines), bad_paths)
    assert all(line["file"] == line["source"] for line in lines if "error" in line)
