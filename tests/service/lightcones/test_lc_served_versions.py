"""Both lightcone preprocess versions stay servable: the model loader accepts every version in
PREPROCESS_VERSIONS, and a pipeline preprocesses by its own manifest's version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from service.inference.lightcone import LightconePipeline, load_lightcone_model
from service.inference.repository import ModelError, ModelRepository
from service.lightcones import make_lightcone
from training.lightcone.config import load_config
from training.lightcone.export_onnx import export
from training.lightcone.model import LightconeNet

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "training" / "lightcone" / "configs" / "lightcone_tiny.json"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> ModelRepository:
    root = tmp_path_factory.mktemp("lc-versions")
    for version, pp in ((1, "lightcone-1"), (2, "lightcone-2")):
        cfg = load_config(TINY)
        cfg.version, cfg.grid.preprocess_version = version, pp
        torch.manual_seed(0)
        net = LightconeNet(cfg.model, cfg.grid.model_grid(), len(cfg.param_names)).eval()
        x = np.random.default_rng(0).normal(0, 0.2, (2, *cfg.grid.model_grid().shape))
        export(net, cfg, np.ones(5, np.float32), root / cfg.name / str(version),
               parity_x=x.astype(np.float32))
    return ModelRepository(root)


def pipeline(mv) -> LightconePipeline:
    return LightconePipeline(mv, None, pool=None, max_file_bytes=1 << 20,
                             on_stats=lambda s: None)


def test_both_versions_load_and_preprocess_by_their_manifest(repo):
    v1 = load_lightcone_model(repo, "lightcone_regressor", 1)
    v2 = load_lightcone_model(repo, "lightcone_regressor", 2)
    assert (v1.manifest.preprocess_version, v2.manifest.preprocess_version) == (
        "lightcone-1", "lightcone-2")
    g = load_config(TINY).grid.model_grid()
    cube = np.random.default_rng(1).normal(40.0, 5.0, (g.n_xy, g.n_xy, g.n_los))
    lc = make_lightcone(cube.astype(np.float32))  # exactly on the grid: no axes needed
    x1 = pipeline(v1).preprocess(lc, "cube").x[0, 0]
    x2 = pipeline(v2).preprocess(lc, "cube").x[0, 0]
    np.testing.assert_allclose(x1, cube / g.scale_mk, rtol=1e-5)
    np.testing.assert_allclose(x2, (cube - cube.mean(axis=(0, 1))) / g.scale_mk, atol=1e-5)


def test_unknown_preprocess_version_is_refused(repo):
    d = repo.root / "lightcone_regressor" / "2"
    m = json.loads((d / "manifest.json").read_text())
    bad = repo.root / "lightcone_regressor" / "3"
    bad.mkdir()
    (bad / "model.onnx").write_bytes((d / "model.onnx").read_bytes())
    (bad / "manifest.json").write_text(json.dumps({**m, "version": 3,
                                                   "preprocess_version": "lightcone-9"}))
    with pytest.raises(ModelError) as e:
        load_lightcone_model(repo, "lightcone_regressor", 3)
    assert e.value.code == "preprocess_mismatch"
