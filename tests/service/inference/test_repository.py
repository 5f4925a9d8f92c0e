"""ModelRepository: Triton layout, latest by default, pinning, and what it refuses to load."""

from __future__ import annotations

import json
import shutil

import pytest

from service.inference.repository import ModelError, ModelRepository
from tests.support.tiny_classifier import write_tiny_model


def test_latest_by_default_and_version_pinnable(model_repo):
    repo = ModelRepository(model_repo)
    assert repo.names() == ["spectrum_classifier"]
    assert repo.versions("spectrum_classifier") == [1, 2]
    assert repo.load("spectrum_classifier").version == 2
    assert repo.load("spectrum_classifier", 1).version == 1


def test_unknown_model_or_version(model_repo):
    repo = ModelRepository(model_repo)
    with pytest.raises(ModelError) as e:
        repo.load("nope")
    assert e.value.code == "model_not_found"
    with pytest.raises(ModelError) as e:
        repo.load("spectrum_classifier", 7)
    assert e.value.code == "model_not_found"


def test_checksum_mismatch_is_refused(tmp_path):
    write_tiny_model(tmp_path, version=1, sha256="0" * 64)
    with pytest.raises(ModelError) as e:
        ModelRepository(tmp_path).load("spectrum_classifier")
    assert e.value.code == "checksum_mismatch"


def test_tampered_onnx_is_refused(tmp_path, model_repo):
    shutil.copytree(model_repo / "spectrum_classifier", tmp_path / "spectrum_classifier")
    onnx = tmp_path / "spectrum_classifier" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ModelError) as e:
        ModelRepository(tmp_path).load("spectrum_classifier", 1)
    assert e.value.code == "checksum_mismatch"


def test_other_preprocess_version_is_refused(tmp_path):
    write_tiny_model(tmp_path, version=1, preprocess_version="0-old")
    with pytest.raises(ModelError) as e:
        ModelRepository(tmp_path).load("spectrum_classifier")
    assert e.value.code == "preprocess_mismatch"


def test_manifest_must_match_its_directory(tmp_path, model_repo):
    shutil.copytree(model_repo / "spectrum_classifier" / "1", tmp_path / "other" / "3")
    with pytest.raises(ModelError) as e:
        ModelRepository(tmp_path).load("other")
    assert e.value.code == "bad_manifest"


def test_unparseable_manifest(tmp_path, model_repo):
    vdir = tmp_path / "spectrum_classifier" / "1"
    shutil.copytree(model_repo / "spectrum_classifier" / "1", vdir)
    m = json.loads((vdir / "manifest.json").read_text())
    del m["sha256"]
    (vdir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError) as e:
        ModelRepository(tmp_path).load("spectrum_classifier")
    assert e.value.code == "bad_manifest"
