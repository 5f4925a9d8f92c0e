"""The `specula` command as a newcomer meets it: real processes, started from a directory
outside the repository, on the real files in ../shared.

- the shipped models are found from any directory (no SPECULA_MODEL_REPOSITORY), by
  `specula serve` and `specula classify` alike;
- with no model to serve, both refuse with the absolute path and how to point elsewhere;
- `--help` lists every command and every training task, every option has a help text,
  `--version` says the installed version, a bare `specula` is a usage error (help, status 2);
- `specula inspect` reads lightcones, shows the file's own pipeline answer, and refuses an
  SDSS eigen-template rather than call it a fully masked spectrum.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from service.cli import TRAIN_TASKS
from tests.support.http_service import free_port
from training.cli import TASK_HELP, TASKS

TIMEOUT = 120


def env_without_repository(**extra: str) -> dict[str, str]:
    """The caller's environment minus any SPECULA_* (a developer's own settings must not
    make the default look as if it worked)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECULA_")}
    return {**env, "MPLCONFIGDIR": "/tmp/specula-test-mpl", **extra}


def specula(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd,
                          env=env_without_repository(**env), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


# ---- item 1: models found from anywhere, or a clear refusal ----------------------------------
@pytest.mark.e2e
def test_serve_from_another_directory_serves_the_shipped_models(tmp_path, sdss_spec_path):
    port = free_port()
    env = env_without_repository(SPECULA_PORT=str(port), SPECULA_INTRA_OP_THREADS="1",
                                 SPECULA_PREPROCESS_WORKERS="1", SPECULA_VERSION_POLICY="latest")
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, proc, log_path)
            r = client.post("/v1/spectra:classify",
                            files={"files": ("spec.fits", sdss_spec_path.read_bytes())})
    finally:
        proc.terminate()
        proc.wait(60)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["class"] == "STAR"


def wait_ready(client: httpx.Client, proc: subprocess.Popen, log_path: Path) -> None:
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            if client.get("/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready in {TIMEOUT} s: {log_path.read_text()[-3000:]}")


@pytest.mark.e2e
def test_serve_refuses_to_start_when_no_model_loads(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = specula("serve", "--repository", "empty", "--port", str(free_port()), cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-3000:]
    refusal = next(json.loads(line) for line in r.stderr.splitlines()
                   if '"no model loaded; refusing to start"' in line)
    assert refusal["level"] == "error"
    assert str(empty) in refusal["hint"]  # absolute, though given relative
    assert "--repository" in refusal["hint"] and "SPECULA_MODEL_REPOSITORY" in refusal["hint"]


def test_classify_from_another_directory_uses_the_shipped_models(tmp_path, sdss_spec_path):
    r = specula("classify", str(sdss_spec_path), "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["class"] == "STAR"


def test_classify_without_a_model_names_the_path_and_the_remedy(tmp_path, sdss_spec_path):
    r = specula("classify", str(sdss_spec_path), "--repository", "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and not r.stdout
    assert str(tmp_path / "nowhere") in r.stderr
    assert "--repository" in r.stderr and "SPECULA_MODEL_REPOSITORY" in r.stderr


# ---- item 6: the command line --------------------------------------------------------------
def test_help_lists_every_command_and_every_training_task(tmp_path):
    top = specula("--help", cwd=tmp_path)
    train = specula("train", "--help", cwd=tmp_path)
    assert top.returncode == 0 and train.returncode == 0
    for command in ("serve", "classify", "inspect", "train"):
        assert re.search(rf"^\s+{command}\s+\S", top.stdout, re.MULTILINE), command
    assert set(TRAIN_TASKS) == set(TASKS) == set(TASK_HELP)
    for task in TRAIN_TASKS:
        assert task in top.stdout
        assert re.search(rf"^\s+{task}\b", train.stdout, re.MULTILINE), task


def test_version_and_a_bare_command(tmp_path):
    v = specula("--version", cwd=tmp_path)
    assert v.returncode == 0 and v.stdout.strip() == f"specula {version('specula')}"
    bare = specula(cwd=tmp_path)
    assert bare.returncode == 2
    assert "commands:" in bare.stderr and "inspect" in bare.stderr


def options_without_help(help_text: str) -> list[str]:
    """Option lines of an argparse help with no text beside or below them."""
    lines = help_text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not re.match(r"^  -", line):
            continue
        beside = re.match(r"^  -\S.*?\s{2,}\S", line)
        below = i + 1 < len(lines) and re.match(r"^ {6,}[^ -]", lines[i + 1])
        if not (beside or below):
            missing.append(line.strip())
    return missing


@pytest.mark.parametrize("argv", [("serve",), ("classify",), ("inspect",), ("train",),
                                  ("train", "spectra"), ("train", "lightcone")])
def test_every_option_has_a_help_text(tmp_path, argv):
    r = specula(*argv, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--" in r.stdout  # the command's own help, not the top level's
    assert options_without_help(r.stdout.split("settings (environment")[0]) == []


def test_inspect_reads_lightcones_pipeline_answers_and_refuses_templates(tmp_path, shared_data):
    spec = shared_data / "sdss" / "spec-1198-52669-0063.fits"
    cone = shared_data / "21cmfast" / "simrun_0.h5"
    template = shared_data / "templates" / "sdss" / "spEigenGal-56436.fits"
    r = specula("inspect", str(spec), str(cone), str(template), cwd=tmp_path)
    assert r.returncode == 1, r.stderr  # the template failed; the others were described
    by_file = {line["file"]: line for line in map(json.loads, r.stdout.splitlines())}
    pipeline = by_file[str(spec)]["pipeline"]
    assert (pipeline["class"], pipeline["subclass"]) == ("STAR", "A0")
    assert abs(pipeline["z"]) < 1e-3 and pipeline["zwarning"] == 0
    lightcone = by_file[str(cone)]
    assert lightcone["kind"] == "lightcone" and lightcone["reader"] == "21cmfast-h5"
    assert lightcone["shape"] == [30, 30, 716] and lightcone["cell_mpc"] == 5.0
    assert 5 < lightcone["redshift_min"] < lightcone["redshift_max"] < 40
    refused = by_file[str(template)]
    assert refused["error"]["code"] == "unknown_format"
    assert "not an observed spectrum" in refused["error"]["detail"]
    assert "npix" not in refused
