"""What the service benchmarks share (bench_service.py, bench_floor.py): the payloads' inputs,
raw ONNX Runtime's throughput as the baseline a service is judged against, the CPU a process
tree spends, and starting and stopping the process under test.

The client that drives the service is the one load generator, tests/support/loadgen.py
(``run_raw``, ``run_client`` and the ``Payload`` builders).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.inference.runner import OnnxRunner
from service.spectra import make_spectrum
from tests.support.loadgen import oip_tensor

REPO_ROOT = Path(__file__).resolve().parents[1]
SDSS = REPO_ROOT.parent / "shared" / "data" / "sdss" / "spec-1198-52669-0063.fits"
EXPOSURE_FIBRES = 2436


# ---- payload inputs ---------------------------------------------------------------------------
def exposure_fibres(spectrum, n: int, rng: np.random.Generator) -> list:
    """n fibres: the real SDSS spectrum with independent noise drawn from its own ivar."""
    sigma = np.where(spectrum.ivar > 0, 1 / np.sqrt(np.maximum(spectrum.ivar, 1e-12)), 0)
    return [make_spectrum(spectrum.wavelength, spectrum.flux + rng.normal(size=spectrum.npix)
                          * sigma, spectrum.ivar, spectrum.mask, {"object_id": f"fibre-{i}"})
            for i in range(n)]


def oip_binary(model: str, x: np.ndarray) -> bytes:
    """The encoded OIP binary-tensor request of ``x``, answered in binary tensors too: how the
    benchmarks send tensors (the ORT outputs come back without JSON formatting)."""
    return oip_tensor(x, model, binary_output=True).encode()


# ---- raw ONNX Runtime: the baseline -----------------------------------------------------------
def raw_throughput(runner: OnnxRunner, x1: np.ndarray, bs: int, seconds: float) -> float:
    """Spectra/s of back-to-back runs at batch size ``bs`` (after one warm-up run)."""
    x = np.ascontiguousarray(np.broadcast_to(x1, (bs, *x1.shape)))
    name = runner.input_names[0]
    runner.run({name: x})
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        runner.run({name: x})
        n += 1
    return bs * n / (time.perf_counter() - t0)


def raw_parallel(runner: OnnxRunner, x1: np.ndarray, bs: int, seconds: float,
                 workers: int) -> float:
    """Spectra/s of ``workers`` threads running the same session at once (ORT releases the
    GIL): the service's own layout (SPECULA_MAX_CONCURRENT_BATCHES one-thread runs), so a
    baseline without it would flatter the service (it beat one all-core run by ~1.4x)."""
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(lambda _: raw_throughput(runner, x1, bs, seconds), range(workers)))


def raw_ort(runner: OnnxRunner, x1: np.ndarray, sizes: list[int], seconds: float,
            rounds: int = 3) -> dict:
    """Spectra/s by batch size, as the median of ``rounds`` interleaved passes (on a shared
    machine one pass per size lets a neighbour's burst pick the "best" size). The best batch
    is the smallest within 3 % of the highest median: the curve is flat above ~32 rows here,
    and a needlessly large batch only costs the service latency and tail overlap."""
    out = {"provider": runner.provider, "by_batch": {}}
    passes = {bs: [] for bs in sizes}
    for _ in range(rounds):
        for bs in sizes:
            passes[bs].append(raw_throughput(runner, x1, bs, seconds / rounds))
    out["by_batch"] = {bs: float(np.median(v)) for bs, v in passes.items()}
    top = max(out["by_batch"].values())
    out["best_batch"] = min(bs for bs, v in out["by_batch"].items() if v >= 0.97 * top)
    out["best"] = out["by_batch"][out["best_batch"]]
    out["batch1_forward_ms"] = batch1_forward_ms(runner, x1)
    return out


def batch1_forward_ms(runner: OnnxRunner, x1: np.ndarray, n: int = 200) -> float:
    """Median wall time of one batch-1 run: the c=1 goal's reference."""
    name = runner.input_names[0]
    forward = []
    for _ in range(n):
        t0 = time.perf_counter()
        runner.run({name: x1[None]})
        forward.append(time.perf_counter() - t0)
    return float(np.median(forward) * 1e3)


def with_cpu(measure) -> tuple[float, float]:
    """(spectra/s, CPU seconds this process spent per spectrum) of one raw measurement."""
    c0, t0 = time.process_time(), time.perf_counter()
    rate = measure()
    return rate, (time.process_time() - c0) / (rate * (time.perf_counter() - t0))


# ---- the process under test -------------------------------------------------------------------
def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.read().decode()


def wait_ready(proc: subprocess.Popen, port: int, path: str, seconds: float, what: str,
               also: Callable[[], bool] = lambda: True) -> None:
    """Poll ``path`` until it answers and ``also()`` holds; stop the bench (and ``proc``) if
    it exits or is not ready within ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            get(port, path)
            if also():
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited during start-up")
        time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"{what} not ready after {seconds:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the workers under --workers)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) the service processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
