"""A real Prometheus (Debian's `prometheus` package; CI installs it) scraping a real service.

Prometheus runs on a free loopback port with docker/prometheus.yml, its target rewritten to
the service the test starts and its alert rules (docker/alerts.yml) loaded. After known
traffic, the queries of the Grafana dashboard and of the alert rules are asked through the
HTTP API and checked against what was sent. promtool checks and unit-tests the rules.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.http_service import free_port
from tests.support.loadgen import json_spectra, oip_rows, run_load

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "specula.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="the `prometheus` binary is not installed (apt-get install "
    "prometheus; .ci/apt-packages.txt lists it, so CI runs this test)")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="`promtool` is not installed (Debian package `prometheus`)")


@needs_promtool
def test_alert_rules_pass_promtool_check_and_unit_tests():
    check = subprocess.run([PROMTOOL, "check", "rules", str(DOCKER / "alerts.yml")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 6 rules found" in check.stdout
    unit = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=Path(__file__).parent,
                          capture_output=True, text=True, timeout=60, check=False)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout + unit.stderr
    config = subprocess.run([PROMTOOL, "check", "config", str(DOCKER / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert config.returncode == 0, config.stdout + config.stderr


# ---- helpers --------------------------------------------------------------------------------
class Prom:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict]:
        r = self.client.get("/api/v1/query", params={"query": expr})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


def buckets(text: str, name: str) -> dict[float, float]:
    """le -> cumulative count, summed over label sets, from an exposition text."""
    out: dict[float, float] = {}
    for m in re.finditer(rf'^{name}_bucket\{{.*le="([^"]+)".*\}} (\S+)$', text, re.MULTILINE):
        le = float(m.group(1))
        out[le] = out.get(le, 0.0) + float(m.group(2))
    return dict(sorted(out.items()))


def prometheus_quantile(q: float, cumulative: dict[float, float]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket."""
    les, counts = list(cumulative), list(cumulative.values())
    rank = q * counts[-1]
    i = next(k for k, c in enumerate(counts) if c >= rank)
    if les[i] == math.inf:
        return les[i - 1]
    lo, c_lo = (0.0, 0.0) if i == 0 else (les[i - 1], counts[i - 1])
    return lo + (les[i] - lo) * (rank - c_lo) / (counts[i] - c_lo)


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((DOCKER / "alerts.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on loopback with the project's config pointed at ``target``."""
    procs: list[subprocess.Popen] = []

    def start(target: str) -> Prom:
        config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(DOCKER / f) for f in config["rule_files"]]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT))
        prom = Prom(f"http://127.0.0.1:{port}")
        end = time.monotonic() + 60
        while True:
            try:
                if prom.client.get("/-/ready").status_code == 200:
                    return prom
            except httpx.TransportError:
                pass
            assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < end, "prometheus not ready in 60 s"
            time.sleep(0.1)

    yield start
    for p in procs:
        p.terminate()
        p.wait(30)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"{what} never became true"
        time.sleep(0.2)


# ---- the test -------------------------------------------------------------------------------
@needs_prometheus
@pytest.mark.parametrize("workers", [1, 2])
def test_dashboard_and_alert_queries_on_real_traffic(start_ops, ops_repo, prometheus, workers):
    """The same totals whether one process or two workers (summed by the multiprocess mode)
    served the traffic."""
    svc = start_ops(ops_repo, max_batch_size=8, max_queue_delay_ms=20, workers=workers)
    prom = prometheus(f"127.0.0.1:{svc.port}")
    wait_for(lambda: prom.query('up{job="specula"} == 1'), what="target up")

    # one request first, seen by a scrape: counters born on first use (items, batches) then
    # have a sample before the traffic, so their rates are defined over it
    assert svc.infer_rows(1).status_code == 200
    wait_for(lambda: prom.query("specula_inference_items_total == 1"), what="first scrape")
    # known traffic: 80 one-row requests at concurrency 8 (batches of up to 8 rows form),
    # 6 three-row requests, 4 native requests of one JSON spectrum and 5 malformed tensors
    load = asyncio.run(run_load(svc.url, [oip_rows(1)], concurrency=8, duration_s=30,
                                max_requests=80))
    print("traffic:", load.summary())
    big = [svc.infer_rows(3) for _ in range(6)]
    native = json_spectra(1)  # the native endpoint: decode + preprocess histograms too
    big += [svc.client.post(native.path, content=native.body, headers=native.headers)
            for _ in range(4)]
    bad = [svc.client.post("/v2/models/spectrum_classifier/infer", content=b"{not json")
           for _ in range(5)]
    # the saliency row's panels: counted in their own family whatever the answer (the tiny
    # model has no saliency graph: 409), so the classification counts below are unchanged
    explain = [svc.client.post("/v1/spectra:saliency", content=native.body,
                               headers=native.headers) for _ in range(2)]
    assert all(r.status_code in (200, 409) for r in explain), [r.text for r in explain]
    assert load.counts["succeeded"] == 80 and all(r.status_code == 200 for r in big)
    assert all(r.status_code == 400 for r in bad)
    text = svc.client.get("/metrics").text
    wait_for(lambda: prom.query('sum(specula_requests_total{outcome="bad_input"}) == 5'),
             what="the last scrape after the traffic")
    time.sleep(1.5)  # one more scrape and one rule evaluation on the final values

    # request counts by outcome, per model/version
    assert prom.scalar('sum(specula_requests_total{outcome="success"})') == 91
    assert prom.scalar('sum(specula_requests_total{outcome="bad_input"})') == 5
    assert prom.query('sum by (model, version) (specula_requests_total)')[0]["metric"] == {
        "model": "spectrum_classifier", "version": "1"}
    assert prom.scalar("sum(specula_inference_items_total)") == 1 + 80 + 18 + 4

    # p99 via histogram_quantile equals Prometheus' interpolation of the service's buckets
    latency = buckets(text, "specula_request_duration_seconds")
    p99 = prom.scalar("histogram_quantile(0.99, sum by (le) "
                      "(specula_request_duration_seconds_bucket))")
    expected = prometheus_quantile(0.99, latency)
    print(f"p99 request latency: {p99 * 1000:.2f} ms from Prometheus, "
          f"{expected * 1000:.2f} ms from /metrics, client p99 {load.percentile_ms(99):.1f} ms")
    assert p99 == pytest.approx(expected, rel=1e-9)

    # batch-size distribution: the same buckets, 103 rows in all, batches ≤ 8 rows
    batch = buckets(text, "specula_batch_size_rows")
    got = {float(r["metric"]["le"]): float(r["value"][1])
           for r in prom.query("sum by (le) (specula_batch_size_rows_bucket)")}
    assert got == batch
    assert prom.scalar("sum(specula_batch_size_rows_sum)") == 103
    assert prom.scalar("sum(specula_batch_size_rows_count)") == prom.scalar(
        "sum(specula_batches_total)")
    assert got[8.0] == got[math.inf]  # max_batch_size = 8
    print("batch sizes (cumulative by le):", {k: v for k, v in got.items() if k <= 16})

    # every dashboard query is valid PromQL and returns data for this model/version
    for title, expr in dashboard_queries():
        expr = (expr.replace("$model", ".*").replace("$version", ".*")
                .replace("$__rate_interval", "1m"))
        result = prom.query(expr)
        assert result, f"dashboard panel {title!r}: no data for {expr}"
        values = [float(r["value"][1]) for r in result]
        print(f"  {title}: {values[:4]}")
        if "Throughput" in title:
            assert all(v > 0 for v in values)

    # the alert rules: loaded, evaluated without error, none firing on a healthy service
    groups = prom.client.get("/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
    wait_for(lambda: all(r["health"] == "ok" for g in prom.client.get(
        "/api/v1/rules").json()["data"]["groups"] for r in g["rules"]), what="rules evaluated")
    assert prom.query('ALERTS{alertstate="firing"}') == []
    for rule in alert_rules():  # each alert expression, asked directly: healthy -> empty
        assert prom.query(rule["expr"]) == [], rule["alert"]
    # ...and the parts they compare: error share 0, saturation ~0, one model loaded
    assert prom.scalar('sum(specula_requests_total{outcome="error"})') == 0
    assert prom.scalar("max(specula_queue_depth_rows / specula_queue_capacity_rows)") < 0.8
    # one loaded version, one info series per worker process
    assert prom.scalar('count by (instance) (specula_model_info == 1)') == workers
