"""The HTTP stack's floor: what any uvicorn service must spend per request on this machine.

    .venv/bin/python -m bench.bench_floor [--duration 6] [--repeat 3]     (repository root)

Issue 4's throughput goals are ratios to raw ONNX Runtime on the same machine. On a machine
the client and the service share, a saturated service can reach at most

    service/raw ≤ raw ÷ (raw + floor + client)        (CPU seconds per spectrum)

(exactly: ``n_cpus ÷ (raw + floor + client)`` spectra/s against raw ORT's measured spectra/s,
which is the same when raw ORT keeps every CPU busy; when it does not — another job on the
machine — the script says so, since the bound is then inflated),

where ``raw`` is ORT's own CPU per spectrum at its best batch (the service cannot spend less
on the model), ``floor`` the CPU the server process spends per spectrum when it does nothing
but receive the request and send a response of the same size, and ``client`` the load
generator's. This script measures ``floor`` with a bare ASGI app under uvicorn — no FastAPI,
no model, no decoding, the same uvicorn and allocator settings as ``specula serve`` — driven by
bench_service.py's client (tests/support/loadgen.py's ``run_raw``) with the same payloads and
concurrency, and prints the bound
beside each goal. A goal above its bound cannot be met by any service built on uvicorn (the
design card's server) on this machine, however its own code is written.

Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

from bench.common import (
    EXPOSURE_FIBRES,
    REPO_ROOT,
    SDSS,
    exposure_fibres,
    oip_binary,
    process_cpu,
    raw_ort,
    raw_parallel,
    stop,
    wait_ready,
    with_cpu,
)
from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner
from service.spectra import Source, preprocess, read_spectra
from service.spectra.readers.exposure import write_exposure
from tests.support.http_service import free_port
from tests.support.loadgen import Payload, multipart_files, run_client, run_raw


# ---- the bare server ------------------------------------------------------------------------
def bare_app(response_bytes: int):
    """An ASGI app that reads the whole body (as ``Request.body()`` does) and answers
    ``response_bytes`` bytes: the least a service can do with a request."""
    body_out = b"x" * response_bytes
    headers = [(b"content-type", b"application/octet-stream"),
               (b"content-length", str(response_bytes).encode())]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        b"".join(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body_out})

    return app


def serve(port: int, response_bytes: int) -> None:
    """uvicorn as ``specula serve`` configures it (service/api/serve.py), allocator included
    (service/api/memory.py, with the default limits)."""
    import uvicorn

    from service.api.memory import keep_upload_memory
    from service.settings import Settings

    keep_upload_memory(Settings())
    config = uvicorn.Config(bare_app(response_bytes), host="127.0.0.1", port=port,
                            log_config=None, access_log=False, timeout_keep_alive=30)
    uvicorn.Server(config).run()


def start_bare(port: int, response_bytes: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_floor", "--serve", str(port),
                             "--response-bytes", str(response_bytes)], cwd=REPO_ROOT)
    wait_ready(proc, port, "/", 30, "the bare server")
    return proc


# ---- the measurement --------------------------------------------------------------------------
def floor(req: bytes, rows: int, conc: int, response_bytes: int, args) -> dict:
    """Server CPU per spectrum of the bare app, and the client's, under the scenario's load."""
    port = free_port()
    proc = start_bare(port, response_bytes)
    try:
        run_client(run_raw(port, req, rows, min(conc, 2), 2, 30))  # warm the connections
        cpu0 = process_cpu([proc.pid])
        r = run_client(run_raw(port, req, rows, conc, args.requests if rows == 1 else 12,
                               args.duration))
        server = process_cpu([proc.pid]) - cpu0
    finally:
        stop(proc)
    n = r["spectra_per_s"] * r["wall_s"]
    return {"server": server / n, "client": r["client_cpu"] * r["wall_s"] / n,
            "p50_ms": r["p50_ms"], "errors": r["errors"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", default=str(REPO_ROOT / "models"))
    p.add_argument("--model", default="spectrum_classifier")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per scenario (max)")
    p.add_argument("--requests", type=int, default=4000, help="requests per scenario (max)")
    p.add_argument("--repeat", type=int, default=3, help="runs per scenario; medians judged")
    p.add_argument("--raw-seconds", type=float, default=1.5)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--response-bytes", type=int, default=1024, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.response_bytes)
        return 0

    mv = ModelRepository(args.repository).load(args.model)
    spectrum = read_spectra(Source.from_path(SDSS))[1][0]
    grid = mv.manifest.spectrum_grid()
    x1 = preprocess(spectrum, grid).x
    n_cpus = len(os.sched_getaffinity(0))
    runner = OnnxRunner(mv.onnx, device="cpu")
    raw = raw_ort(runner, x1, [8, 32, 64, 128, 256], args.raw_seconds)
    bs = raw["best_batch"]
    print(f"model {mv.name} v{mv.version}, cpus {n_cpus}, load avg {os.getloadavg()[0]:.1f}; "
          f"raw ORT best batch {bs}")

    rng = np.random.default_rng(0)
    fits = multipart_files([(SDSS.name, SDSS.read_bytes())]).encode()
    exposure = write_exposure(exposure_fibres(spectrum, EXPOSURE_FIBRES, rng))
    x_exposure = np.broadcast_to(x1, (EXPOSURE_FIBRES, *x1.shape))
    # name, request, spectra per request, concurrency, response bytes (the service's, about:
    # one JSON result ~0.7 KB, one OIP row's binary outputs ~0.6 KB), goal
    scenarios = [
        ("exposure container (FITS, 2,436 fibres)",
         Payload("POST", "/v1/spectra:classify", {"Content-Type": "application/fits"},
                 exposure).encode(),
         EXPOSURE_FIBRES, 2, EXPOSURE_FIBRES * 700, 0.9),
        ("exposure as OIP binary tensor (2,436 rows)",
         oip_binary(args.model, np.ascontiguousarray(x_exposure)), EXPOSURE_FIBRES, 2,
         EXPOSURE_FIBRES * 68, 0.9),
        ("single SDSS FITS, multipart, c=32",
         fits, 1, 32, 700, 0.6),
        ("single row OIP binary, c=32", oip_binary(args.model, x1[None]), 1, 32, 600, 0.6),
    ]
    latency = [  # the c=1 goal: p50 − batch-1 forward ≤ 2 ms
        ("single SDSS FITS, multipart, c=1",
         fits, 1, 1, 700, 2.0),
        ("single row OIP binary, c=1", oip_binary(args.model, x1[None]), 1, 1, 600, 2.0),
    ]
    print(f"\n{'scenario':44} {'floor ms':>8} {'client ms':>9} {'raw ms':>7} "
          f"{'bound':>6} {'goal':>5}   (CPU ms per spectrum; bound = raw ÷ (raw + floor + "
          f"client))")
    for name, req, rows, conc, resp, goal in scenarios:
        bounds, floors, clients, raws, busy = [], [], [], [], []
        for _ in range(args.repeat):
            rate, raw_cpu = with_cpu(lambda: raw_parallel(runner, x1, bs,
                                                          args.raw_seconds / 3, n_cpus))
            f = floor(req, rows, conc, resp, args)
            floors.append(f["server"])
            clients.append(f["client"])
            raws.append(raw_cpu)
            # at most n_cpus CPU-seconds a second, each spectrum costing all three
            bounds.append(n_cpus / (raw_cpu + f["server"] + f["client"]) / rate)
            busy.append(rate * raw_cpu / n_cpus)
        med = float(np.median(bounds))
        print(f"{name:44} {np.median(floors) * 1e3:8.3f} {np.median(clients) * 1e3:9.3f} "
              f"{np.median(raws) * 1e3:7.3f} {med:6.2f} {goal:5}   "
              f"{'goal above the bound: cannot be met here' if goal > med else 'feasible'}"
              f"  (bounds {', '.join(f'{b:.2f}' for b in bounds)})")
        if min(busy) < 0.9:  # raw ORT got less than the machine: something else ran
            print(f"  ! raw ORT kept only {min(busy):.0%} of the CPUs busy: the machine is "
                  f"shared right now, and this bound is inflated by as much; CPU-only bound "
                  f"raw ÷ (raw + floor + client) = "
                  f"{np.median(raws) / (np.median(raws) + np.median(floors) + np.median(clients)):.2f}")
    print(f"\n{'scenario':44} {'floor p50 ms':>12} {'goal ms':>8}   (the bare server's p50 "
          f"latency: the part of the goal's budget no service can spend)")
    for name, req, rows, conc, resp, goal in latency:
        p50 = [floor(req, rows, conc, resp, args)["p50_ms"] for _ in range(args.repeat)]
        med = float(np.median(p50))
        print(f"{name:44} {med:12.2f} {goal:8.1f}   leaves {goal - med:.2f} ms for decoding, "
              f"preprocessing, batching and encoding  (p50s {', '.join(f'{v:.2f}' for v in p50)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
