"""A lightcone from another 21cmFAST setup (the shared v3 file) through the served regressor,
as /v1/lightcones:infer answers it: the whole 150 Mpc sky is used, and the answer says how the
cube differs from the training set. Whether the truth falls inside the intervals is reported in
models/lightcone_regressor/*/report.md, not asserted here."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.foreign_lightcones import estimate_foreign, foreign_files, markdown

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not foreign_files(), reason="../shared/data/21cmfast/simrun_0.h5 absent")
def test_the_served_regressor_reads_the_whole_foreign_sky_and_says_what_differs():
    rows = estimate_foreign(str(REPO / "models"))
    assert [r["parameter"] for r in rows] == ["OMm", "L_X", "NU_X_THRESH", "ION_Tvir_MIN",
                                              "HII_EFF_FACTOR"]
    answer = rows[0]["answer"]
    # 150 Mpc of 5 Mpc cells for a 64 Mpc field of 4 Mpc cells: 3 × 3 patches, nothing cropped
    assert answer["sky"]["patches"] == 9 and answer["sky"]["covered_fraction"] == 1.0
    assert any("coarser than the model's" in w for w in answer["warnings"])
    for r in rows:
        assert r["sigma"] > 0 and r["patch_chi2"] is not None
    assert markdown(rows).count("| simrun_0.h5 |") == 5
