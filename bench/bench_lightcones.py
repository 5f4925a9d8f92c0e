"""Peak RSS of `specula serve` under N parallel large lightcone uploads (issue 6).

Starts the service on a free loopback port with the given repository, then for each N sends N
concurrent ``POST /v1/lightcones:infer`` of one big raw float32 cube (default 140×140×2350,
184 MB — 21cmPIE-Net's cube size — with its axes, so the service resamples it onto the model
grid), and reads the server's peak RSS (VmHWM) and current RSS from /proc after each round.
The service's lightcone byte budget (4 × SPECULA_MAX_FILE_BYTES) is what keeps the peak flat
in N. Not a test: nothing here asserts.

    .venv/bin/python -m bench.bench_lightcones [--repository models] [--n 1 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from tests.support.http_service import free_port

REPO = Path(__file__).resolve().parents[1]


def proc_mem(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) / 1024.0  # MiB
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repository", default=str(REPO / "models"))
    ap.add_argument("--model", default="lightcone_regressor")
    ap.add_argument("--shape", default="140,140,2350")
    ap.add_argument("--cell-mpc", type=float, default=200.0 / 140)
    ap.add_argument("--nu", default="220,60", help="first,last frequency of the cube (MHz)")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--max-file-mb", type=int, default=256)
    ap.add_argument("--server-log", default="", help="write the service log here")
    a = ap.parse_args(argv)

    shape = tuple(int(v) for v in a.shape.split(","))
    cube = np.random.default_rng(0).normal(0, 20, shape).astype("<f4")
    body = cube.tobytes()
    del cube
    nu0, nu1 = (float(v) for v in a.nu.split(","))
    port = free_port()
    env = {**os.environ, "SPECULA_MODEL_REPOSITORY": a.repository, "SPECULA_PORT": str(port),
           "SPECULA_MODELS": json.dumps([a.model]), "SPECULA_ACCESS_LOG": "false",
           "SPECULA_MAX_FILE_BYTES": str(a.max_file_mb << 20),
           "SPECULA_MAX_BODY_BYTES": str((a.max_file_mb + 16) << 20),
           "SPECULA_INTRA_OP_THREADS": "1", "SPECULA_PREPROCESS_WORKERS": "2"}
    log = open(a.server_log, "wb") if a.server_log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=600)
    try:
        for _ in range(600):
            try:
                if client.get(f"/v2/models/{a.model}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        base = proc_mem(proc.pid)
        print(f"cube {shape} float32 = {len(body) / 1e6:.0f} MB; idle server RSS "
              f"{base['VmRSS']:.0f} MiB (peak so far {base['VmHWM']:.0f} MiB)")
        params = {"shape": a.shape, "nu_first_mhz": nu0, "nu_last_mhz": nu1,
                  "cell_mpc": a.cell_mpc}
        rows = []
        for n in a.n:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as ex:
                rs = list(ex.map(lambda _: client.post(
                    "/v1/lightcones:infer", content=body, params=params,
                    headers={"content-type": "application/octet-stream"}), range(n)))
            dt = time.perf_counter() - t0
            mem = proc_mem(proc.pid)
            codes = {c: sum(r.status_code == c for r in rs) for c in sorted({r.status_code
                                                                             for r in rs})}
            rows.append({"n": n, "seconds": round(dt, 1), "status": codes,
                         "peak_rss_mib": round(mem["VmHWM"]), "rss_after_mib": round(mem["VmRSS"])})
            print(f"N={n:2d}: {dt:6.1f} s, status {codes}, server peak RSS {mem['VmHWM']:.0f} MiB,"
                  f" RSS after {mem['VmRSS']:.0f} MiB")
            for r in rs:
                if r.status_code != 200:
                    print(f"  {r.status_code}: {r.text[:300]}")
                    break
        print(json.dumps({"cube_mb": round(len(body) / 1e6), "idle_rss_mib": round(base["VmRSS"]),
                          "rounds": rows}))
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
