"""An archive rerun exits 1 while files it skips as done still failed (docs/archive.md).

Real `specula classify --output x.parquet` processes over the real SDSS spectrum and a garbage
file: the first run writes the garbage file's error row; the rerun skips both files (nothing
changed) and still exits 1, since the output still holds that failure. Once the garbage file
is removed from the inputs the same output answers 0.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SPECULA = str(Path(sys.executable).parent / "specula")


def archive_run(inputs: list[Path], out: Path, models: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SPECULA, "classify", *map(str, inputs), "--output", str(out),
                           "--repository", str(models), "--workers", "0", "--quiet"], check=False,
                          capture_output=True, text=True, timeout=300)


def test_a_rerun_still_reports_the_failures_it_skips(archive_models, sdss_spec_path, tmp_path):
    good = tmp_path / "in" / "good.fits"
    garbage = tmp_path / "in" / "garbage.fits"
    good.parent.mkdir()
    shutil.copyfile(sdss_spec_path, good)
    garbage.write_bytes(b"these bytes are no spectrum \x00\x01\x02")
    out = tmp_path / "results.parquet"

    first = archive_run([good, garbage], out, archive_models)
    assert first.returncode == 1, first.stderr
    assert "1 files failed" in first.stderr

    rerun = archive_run([good, garbage], out, archive_models)
    assert rerun.returncode == 1, rerun.stderr
    assert "(2 already done, skipped, 1 of them with errors from before)" in rerun.stderr

    only_good = archive_run([good], out, archive_models)
    assert only_good.returncode == 0, only_good.stderr
