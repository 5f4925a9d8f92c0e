"""Specula service benchmark: raw ONNX Runtime, then the running service over loopback.

One run, on this machine, same model, same thread settings:
1. raw ORT throughput of the served model over batch sizes → the best batch size, and the
   batch-1 forward time;
2. `specula serve` started with that batch size, then driven over loopback by a deliberately
   cheap client (raw HTTP/1.1 on asyncio streams, pre-built request bytes; it reports its own
   CPU use so you can see it was not the bottleneck), with realistic payloads:
   the exposure container (2,436 fibres, FITS), the OIP binary tensor of a whole exposure,
   single real SDSS FITS files (multipart) and single-row OIP binary tensors;
3. spectra/s, p50/p95/p99, service/raw ratios against the goals of issue 4, and the executed
   batch-size histogram read from the service's own /metrics;
4. with ``--compare ray``: the same scenarios, payloads and client against the same model
   behind Ray Serve with ``@serve.batch`` (bench/serve_ray.py), and a side-by-side table.

Every scenario is bounded by --requests and --duration. Not a test: nothing here asserts.
From the repository root:
    .venv/bin/python -m bench.bench_service [--repository models] [--duration 8] [--compare ray]

The client is tests/support/loadgen.py's ``run_raw``; the raw-ORT baseline, process CPU
accounting and process start/stop are in bench/common.py (bench_floor.py uses them too).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench.common import (
    EXPOSURE_FIBRES,
    REPO_ROOT,
    SDSS,
    batch1_forward_ms,
    exposure_fibres,
    get,
    oip_binary,
    process_cpu,
    process_tree,
    raw_ort,
    raw_parallel,
    raw_throughput,
    stop,
    wait_ready,
    with_cpu,
)
from service.inference.repository import ModelRepository
from service.inference.runner import CUDA, OnnxRunner
from service.spectra import Source, preprocess, read_spectra
from service.spectra.readers.exposure import write_exposure
from tests.support.http_service import free_port
from tests.support.loadgen import Payload, multipart_files, run_client, run_raw


# ---- 1. raw ONNX Runtime --------------------------------------------------------------------
def raw_layouts(onnx: bytes, runner: OnnxRunner, x1: np.ndarray, bs: int, seconds: float,
                n_cpus: int) -> list:
    """The raw baselines a scenario is compared with; the best of them counts.

    On CPU: the runner's own threads, one thread per CPU (the usual setting), and one-thread
    runs on every CPU at once (raw_parallel). On CUDA: the one session, one batch at a time,
    inputs copied in and outputs copied out through IOBinding, which is the service's layout
    (a GPU runs one batch at a time; a second CPU thread adds nothing but contention)."""
    layouts = [lambda: raw_throughput(runner, x1, bs, seconds)]
    if runner.provider != CUDA:
        all_cores = OnnxRunner(onnx, device="cpu", intra_op_threads=n_cpus)
        layouts.append(lambda: raw_throughput(all_cores, x1, bs, seconds))
        layouts.append(lambda: raw_parallel(runner, x1, bs, seconds, n_cpus))
    return layouts


def gpu_name() -> str:
    """', GPU name (driver)' from nvidia-smi, for the record; empty when it cannot say."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f", {out.splitlines()[0]}" if out else ""


# ---- 2. the service -------------------------------------------------------------------------
def start_service(port: int, repo: str, batch: int, threads: int, log, device: str = "auto",
                  workers: int = 1, concurrent_batches: int = 0,
                  server_root: str | os.PathLike = REPO_ROOT) -> subprocess.Popen:
    """``specula serve`` of the code at ``server_root`` (this checkout, or a worktree of another
    commit: ``python -m`` imports the package of its working directory first)."""
    env = {**os.environ, "SPECULA_MODEL_REPOSITORY": repo, "SPECULA_PORT": str(port),
           "SPECULA_WORKERS": str(workers),
           "SPECULA_MAX_CONCURRENT_BATCHES": str(concurrent_batches),
           "SPECULA_INTRA_OP_THREADS": str(threads), "SPECULA_DEVICE": device,
           "SPECULA_MAX_BATCH_SIZE": str(batch), "SPECULA_ACCESS_LOG": "false",
           "SPECULA_LOG_LEVEL": "warning", "SPECULA_VERSION_POLICY": "latest",
           "SPECULA_MAX_QUEUE_ROWS": str(8 * EXPOSURE_FIBRES)}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=server_root,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    # under --workers, ready once every worker has loaded (one pid label each)
    wait_ready(proc, port, "/v2/health/ready", 90, "the service (see its log)",
               also=lambda: workers == 1 or len(set(re.findall(
                   r'specula_model_info\{[^}]*pid="(\d+)"', get(port, "/metrics")))) >= workers)
    return proc


def scrape(port: int) -> dict[str, float]:
    """Batch-size buckets (by ``le``) and compute/items totals from the service's /metrics
    (every worker's, under --workers)."""
    text = get(port, "/metrics")
    out: dict[str, float] = {}
    for m in re.finditer(r'specula_batch_size_rows_bucket\{le="([^"]+)"[^}]*\} (\S+)', text):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    for key in ("specula_compute_duration_seconds_sum", "specula_inference_items_total"):
        out[key] = sum(float(v) for v in re.findall(rf"^{key}\{{[^}}]*\}} (\S+)", text, re.MULTILINE))
    return out


def histogram_delta(before: dict, after: dict) -> str:
    cum = [(k, after.get(k, 0) - before.get(k, 0)) for k in after if not k.startswith("specula")]
    prev, parts = 0.0, []
    for le, c in cum:
        if c - prev:
            parts.append(f"≤{le.replace('.0', '')}:{int(c - prev)}")
        prev = c
    return " ".join(parts) or "(none)"


def drive(port: int, req: bytes, rows: int, conc: int, args) -> dict:
    max_req = min(args.requests, 12) if rows > 1 else args.requests
    return run_client(run_raw(port, req, rows, conc, max_req, args.duration))


def line(r: dict) -> str:
    return (f"{r['spectra_per_s']:,.0f} spectra/s  p50 {r['p50_ms']:.1f} ms  "
            f"p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms")


def cpu_accounting(r: dict) -> str:
    """Where the CPU went, per spectrum: the service, the client, and raw ORT. On a machine
    the three share, service/raw cannot exceed raw ÷ (service + client) once it is saturated:
    the ceiling this run's own costs allow, whatever the scheduling."""
    n = r["spectra_per_s"] * r["wall_s"]
    server = r["server_cpu"] / n
    client = r["client_cpu"] * r["wall_s"] / n
    raw = r["raw_cpu_per_spectrum"]
    return (f"CPU per spectrum: service {server * 1e3:.2f} ms + client {client * 1e3:.2f} ms; "
            f"raw ORT {raw * 1e3:.2f} ms → CPU-bound ceiling of service/raw "
            f"{raw / (server + client):.2f}")


def report(name: str, r: dict, raw: dict, raw_now: float, goal: float | None,
           before: dict, after: dict) -> None:
    hist = histogram_delta(before, after)
    ratio = r["spectra_per_s"] / raw_now
    compute = (after["specula_compute_duration_seconds_sum"]
               - before["specula_compute_duration_seconds_sum"])
    items = after["specula_inference_items_total"] - before["specula_inference_items_total"]
    print(f"\n[{name}] {r['requests']} requests in {r['wall_s']:.1f} s"
          + (f", errors {r['errors']}" if r["errors"] else "")
          + f"  (load avg {os.getloadavg()[0]:.1f})")
    print(f"  {line(r)}  service/raw {ratio:.2f}  client CPU {r['client_cpu']:.0%} of a core")
    b, a = r["raw_before_after"]
    print(f"  raw ORT just before and after (best of raw_layouts: on CPU the service's "
          f"threads, all CPUs, one run per CPU; on CUDA one session), batch "
          f"{raw['best_batch']}: {b:,.0f} and {a:,.0f}, mean {raw_now:,.0f} "
          f"spectra/s;"
          f" ORT inside the service: {items / max(compute, 1e-9):,.0f} spectra/s "
          f"of compute time, busy {compute / r['wall_s']:.0%} of the wall time")
    over = r["p50_ms"] - r["batch1_forward_ms"]
    if goal is not None:
        print(f"  goal service/raw ≥ {goal}: {'met' if ratio >= goal else 'NOT met'}")
    else:
        print(f"  p50 − raw batch-1 forward ({r['batch1_forward_ms']:.2f} ms, mean of just "
              f"before and after) = {over:.2f} ms (goal ≤ 2 ms: "
              f"{'met' if over <= 2 else 'NOT met'})")
    print(f"  {cpu_accounting(r)}")
    print(f"  executed batch sizes (rows): {hist}")
    return ratio if goal is not None else over


def summary(judged: dict[str, list[float]], goals: dict[str, float | None]) -> None:
    """Each goal judged on the median of the repeats: one run on this machine moves ±20 %."""
    print("\nGoals of issue 4, median of the repeats (each figure: its own run)")
    for name, values in judged.items():
        goal = goals[name]
        med = float(np.median(values))
        shown = ", ".join(f"{v:.2f}" for v in values)
        if goal is None:
            verdict = "met" if med <= 2 else "NOT met"
            print(f"  {name:<45} p50 − forward ms {shown} → median {med:.2f} "
                  f"(≤ 2: {verdict})")
        else:
            verdict = "met" if med >= goal else "NOT met"
            print(f"  {name:<45} service/raw {shown} → median {med:.2f} "
                  f"(≥ {goal}: {verdict})")


def start_ray(port: int, repo: str, model: str, batch: int, threads: int, log,
              replicas: int = 1) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.serve_ray", "--port", str(port),
         "--repository", repo, "--model", model, "--max-batch-size", str(batch),
         "--intra-op-threads", str(threads), "--num-replicas", str(replicas)],
        cwd=REPO_ROOT, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(proc, port, "/v2/health/ready", 180,
               f"bench.serve_ray (Ray Serve); see {log.name}")
    return proc



def compare_ray(args, batch: int, scenarios: list, specula: dict) -> None:
    """The same scenarios against the same model behind Ray Serve, then side by side."""
    port = free_port()
    with tempfile.NamedTemporaryFile("wb", suffix=".log", delete=False) as log:
        t0 = time.perf_counter()
        # as many Ray replicas as Specula has worker processes
        proc = start_ray(port, args.repository, args.model, batch, args.intra_op_threads, log,
                         args.workers)
        print(f"\n[Ray Serve (@serve.batch, max_batch_size {batch}, {args.workers} "
              f"replica(s)), started in "
              f"{time.perf_counter() - t0:.0f} s; log {log.name}]")
        ray = {}
        try:
            for name, req, rows, conc, _ in scenarios:
                if name not in specula:
                    continue
                run_client(run_raw(port, req, rows, min(conc, 2), 2, 30))
                ray[name] = r = drive(port, req, rows, conc, args)
                print(f"  {name}: {r['requests']} requests"
                      + (f", errors {r['errors']}" if r["errors"] else "")
                      + f"  {line(r)}  (load avg {os.getloadavg()[0]:.1f})")
        finally:
            stop(proc)
    print("\nSpecula vs Ray Serve, same model, same payloads, same client, one after the other")
    print(f"{'scenario':44} {'Specula spectra/s':>17} {'p50':>8} {'p99':>8} | "
          f"{'Ray spectra/s':>13} {'p50':>8} {'p99':>8} | {'thrpt ×':>7} {'p99 ÷':>6}")
    for name, s_ in specula.items():
        r = ray[name]
        print(f"{name:44} {s_['spectra_per_s']:17,.0f} {s_['p50_ms']:8.1f} {s_['p99_ms']:8.1f} | "
              f"{r['spectra_per_s']:13,.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} | "
              f"{s_['spectra_per_s'] / r['spectra_per_s']:7.2f} "
              f"{r['p99_ms'] / s_['p99_ms']:6.2f}")
    print("(thrpt × = Specula spectra/s ÷ Ray's; p99 ÷ = Ray's p99 ÷ Specula's: > 1 means "
          "Specula is better)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", default=str(REPO_ROOT / "models"))
    p.add_argument("--server-root", default=str(REPO_ROOT),
                   help="serve the service code of this directory (e.g. `git worktree add "
                        "/tmp/old COMMIT`): the same client, payloads and raw baseline against "
                        "another version of the service, for an A/B in one session")
    p.add_argument("--model", default="spectrum_classifier")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per scenario (max)")
    p.add_argument("--requests", type=int, default=2000, help="requests per scenario (max)")
    p.add_argument("--raw-seconds", type=float, default=1.5,
                   help="seconds of raw ORT per batch size (split over 3 interleaved passes)")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="ORT intra-op threads of the service (0 = its default, usable CPUs - 1)")
    p.add_argument("--batch", type=int, default=0,
                   help="serve with this max batch size instead of raw ORT's best (to compare "
                        "runs on a noisy machine like with like)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the scenarios this many times, in turn; goals judged on medians")
    p.add_argument("--only", default="", help="run only scenarios whose name contains this "
                   "(or one of several, separated by |)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="execution provider of raw ORT and of the service (SPECULA_DEVICE)")
    p.add_argument("--workers", type=int, default=1,
                   help="SPECULA_WORKERS: service processes on the one port")
    p.add_argument("--concurrent-batches", type=int, default=0,
                   help="SPECULA_MAX_CONCURRENT_BATCHES of each worker (0: the service's "
                        "default)")
    p.add_argument("--compare", choices=["none", "ray"], default="none",
                   help="also drive the same model behind Ray Serve (bench/serve_ray.py; "
                        "pip install -e .[bench])")
    args = p.parse_args(argv)

    mv = ModelRepository(args.repository).load(args.model)
    spectrum = read_spectra(Source.from_path(SDSS))[1][0]
    grid = mv.manifest.spectrum_grid()
    x1 = preprocess(spectrum, grid).x
    print(f"model {mv.name} v{mv.version} sha256 {mv.manifest.sha256[:12]}…  "
          f"cpus {len(os.sched_getaffinity(0))}  load avg {os.getloadavg()[0]:.1f}")

    runner = OnnxRunner(mv.onnx, device=args.device, intra_op_threads=args.intra_op_threads)
    on_gpu = runner.provider == CUDA
    n_cpus = len(os.sched_getaffinity(0))
    sizes = [1, 8, 32, 64, 128, 256, 512, 1024] + ([2048, 4096] if on_gpu else [])
    raw = raw_ort(runner, x1, sizes, args.raw_seconds)
    print(f"\n[raw ORT, {raw['provider']}{gpu_name() if on_gpu else ''}] spectra/s by batch: "
          + ", ".join(
        f"{b}: {v:,.0f}" for b, v in raw["by_batch"].items()))
    print(f"best batch {raw['best_batch']}: {raw['best']:,.0f} spectra/s; "
          f"batch-1 forward p50 {raw['batch1_forward_ms']:.2f} ms")
    if args.batch:
        raw["best_batch"] = args.batch
        print(f"served (and raw re-measured) at --batch {args.batch}")

    rng = np.random.default_rng(0)
    fits = multipart_files([(SDSS.name, SDSS.read_bytes())]).encode()
    exposure = write_exposure(exposure_fibres(spectrum, EXPOSURE_FIBRES, rng))
    xs = np.stack([preprocess(s, grid).x for s in exposure_fibres(spectrum, 64, rng)])
    x_exposure = xs[np.arange(EXPOSURE_FIBRES) % len(xs)]
    scenarios = [
        # name, request bytes, spectra per request, concurrency, goal (ratio to raw)
        ("exposure container (FITS, 2,436 fibres)",
         Payload("POST", "/v1/spectra:classify", {"Content-Type": "application/fits",
                                                  "X-Filename": "exposure.fits"},
                 exposure).encode(), EXPOSURE_FIBRES, 2, 0.9),
        ("exposure as OIP binary tensor (2,436 rows)", oip_binary(args.model, x_exposure),
         EXPOSURE_FIBRES, 2, 0.9),
        ("single SDSS FITS, multipart, c=32", fits, 1, 32, 0.6),
        ("single row OIP binary, c=32", oip_binary(args.model, x1[None]), 1, 32, 0.6),
        ("single SDSS FITS, multipart, c=1", fits, 1, 1, None),
        ("single row OIP binary, c=1", oip_binary(args.model, x1[None]), 1, 1, None),
    ]

    results = {}
    port = free_port()
    with tempfile.NamedTemporaryFile("wb", suffix=".log", delete=False) as log:
        proc = start_service(port, args.repository, raw["best_batch"], args.intra_op_threads,
                             log, args.device, args.workers, args.concurrent_batches,
                             args.server_root)
        if args.server_root != str(REPO_ROOT):
            print(f"\nservice: the code of {args.server_root}")
        if args.workers > 1:
            print(f"\nservice: {args.workers} worker processes (SPECULA_WORKERS)")
        layouts = raw_layouts(mv.onnx, runner, x1, raw["best_batch"], args.raw_seconds, n_cpus)
        judged: dict[str, list[float]] = {}
        try:
            for _rep, (name, req, rows, conc, goal) in itertools.product(range(args.repeat),
                                                                         scenarios):
                if not any(part in name for part in args.only.split("|")):
                    continue
                warm = max(min(conc, 2), 2 * args.workers)  # warm this path in every worker
                run_client(run_raw(port, req, rows, warm, warm, 30))
                # the machine is shared: raw ORT again, right now, so the ratio compares like
                # with like (the service is idle meanwhile)
                raw_before = max(with_cpu(f) for f in layouts)
                forward_before = batch1_forward_ms(runner, x1)
                before = scrape(port)
                pids = process_tree(proc.pid)
                cpu0 = process_cpu(pids)
                r = drive(port, req, rows, conc, args)
                r["server_cpu"] = process_cpu(pids) - cpu0
                after = scrape(port)
                # raw ORT again right after: this machine's speed drifts by ±20 % within a
                # minute, so the scenario is compared with the mean of the two measurements
                raw_after = max(with_cpu(f) for f in layouts)
                r["batch1_forward_ms"] = (forward_before + batch1_forward_ms(runner, x1)) / 2
                raw_now = (raw_before[0] + raw_after[0]) / 2
                r["raw_cpu_per_spectrum"] = (raw_before[1] + raw_after[1]) / 2
                r["raw_before_after"] = (raw_before[0], raw_after[0])
                results[name] = r
                judged.setdefault(name, []).append(
                    report(name, r, raw, raw_now, goal, before, after))
        finally:
            stop(proc)
    if args.repeat > 1:
        summary(judged, {name: goal for name, _, _, _, goal in scenarios})
    if args.compare == "ray":
        compare_ray(args, raw["best_batch"], scenarios, results)
    else:
        print("\nRay Serve comparison: not run (--compare ray; needs pip install -e .[bench])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
