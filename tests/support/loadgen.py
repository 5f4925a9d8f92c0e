"""Specula's one load generator: N concurrent clients for a bounded time, on loopback.

One vocabulary of requests (``Payload``: oip_rows, oip_tensor, json_spectra, multipart_files,
fits_file) and two ways to send them, because tests and benchmarks ask different questions:

- ``run_load`` (httpx) answers "what happened to every request": each is counted exactly once,
  ``succeeded`` (2xx), ``rejected`` (429, or 503 with a ``Retry-After``: deliberate
  backpressure), ``client_error`` (other 4xx), ``server_error`` (other 5xx), ``refused`` (the
  connection was refused: never accepted, e.g. after shutdown) and ``failed`` (sent on an open
  connection, no answer came: lost); ``sent`` = the sum of all. tests/ops drives load,
  SIGTERM and restarts with it.
- ``run_raw`` answers "how fast is the service": pre-encoded request bytes on raw asyncio
  streams, keep-alive, nothing parsed but the status and the length, and the client's own CPU
  reported. The benchmark's client shares the machine's CPUs with the service, so every µs it
  spends is one the service cannot (bench/bench_service.py, bench/bench_floor.py).

It lives with the tests, not in bench/, because the tests need it and the tests must not
depend on the benchmarks; the benchmarks import it from here. Runnable by hand (``run_load``),
from the repository root:

    .venv/bin/python -m tests.support.loadgen http://127.0.0.1:8000 --concurrency 32 --duration 5
    .venv/bin/python -m tests.support.loadgen URL --fits ../shared/data/sdss/spec-1198-52669-0063.fits

Loopback use only in tests; the default concurrency (32) is the benchmark's
(bench/bench_service.py, "c=32" scenarios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

MODEL = "spectrum_classifier"


@dataclass(frozen=True)
class Payload:
    """One request, whole: sent as is by ``run_load`` and, encoded once, by ``run_raw``."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def encode(self, host: str = "bench") -> bytes:
        """The request as HTTP/1.1 bytes, built once so that sending it costs the client no
        work (``run_raw``)."""
        head = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}",
                f"Content-Length: {len(self.body)}",
                *(f"{k}: {v}" for k, v in self.headers.items())]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


def oip_tensor(x: np.ndarray, model: str = MODEL, binary_output: bool = False) -> Payload:
    """OIP infer of the FP32 tensor ``x`` (rows, 2, pixels) as a binary tensor; with
    ``binary_output`` the answer comes back as binary tensors too (the benchmark's choice)."""
    doc: dict = {"inputs": [{"name": "spectrum", "shape": list(x.shape), "datatype": "FP32",
                             "parameters": {"binary_data_size": x.nbytes}}]}
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    header = json.dumps(doc).encode()
    return Payload("POST", f"/v2/models/{model}/infer",
                   {"Inference-Header-Content-Length": str(len(header)),
                    "Content-Type": "application/octet-stream"}, header + x.tobytes())


def oip_rows(rows: int = 1, npix: int = 4076, model: str = MODEL, value: float = 0.0) -> Payload:
    """OIP infer of ``rows`` constant spectra as a binary tensor."""
    return oip_tensor(np.full((rows, 2, npix), value, np.float32), model)


def json_spectra(n: int = 1, pixels: int = 3000, seed: int = 0) -> Payload:
    """``n`` synthetic spectra (3800-9200 Å, noisy continuum) as a JSON document to /v1."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(3800.0, 9200.0, pixels)
    doc = {"spectra": [{"wavelength": wave.round(3).tolist(),
                        "flux": (1.0 + 0.1 * rng.standard_normal(pixels)).round(4).tolist(),
                        "ivar": np.full(pixels, 100.0).tolist(), "object_id": f"synthetic-{i}"}
                       for i in range(n)]}
    return Payload("POST", "/v1/spectra:classify", {"Content-Type": "application/json"},
                   json.dumps(doc).encode())


def multipart_files(files: list[tuple[str, bytes]], path: str = "/v1/spectra:classify"
                    ) -> Payload:
    """Survey files (name, bytes) as one multipart/form-data request to the native endpoint,
    each in a ``files`` part."""
    boundary = "specula-load-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
             f'filename="{name}"\r\nContent-Type: application/fits\r\n\r\n'.encode()
             + data + b"\r\n" for name, data in files]
    return Payload("POST", path,
                   {"Content-Type": f"multipart/form-data; boundary={boundary}"},
                   b"".join(parts) + f"--{boundary}--\r\n".encode())


def fits_file(path: Path) -> Payload:
    """One survey file as multipart to the native endpoint."""
    return multipart_files([(path.name, path.read_bytes())])


@dataclass
class LoadResult:
    counts: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # transport error type -> count
    duration_s: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.counts.values())

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else 0.0

    def summary(self) -> str:
        c = self.counts
        return (f"sent {self.sent} in {self.duration_s:.1f} s: succeeded {c['succeeded']}, "
                f"rejected {c['rejected']}, client_error {c['client_error']}, "
                f"server_error {c['server_error']}, refused {c['refused']}, "
                f"failed (no answer) {c['failed']}; answered {self.answered}; "
                f"p50 {self.percentile_ms(50):.1f} ms p99 {self.percentile_ms(99):.1f} ms; "
                f"statuses {dict(sorted(self.statuses.items()))}"
                + (f"; transport errors {dict(self.errors)}" if self.errors else ""))


def classify(status: int, headers: httpx.Headers) -> str:
    if 200 <= status < 300:
        return "succeeded"
    if status == 429 or (status == 503 and "retry-after" in headers):
        return "rejected"
    return "client_error" if status < 500 else "server_error"


async def run_load(url: str, payloads: list[Payload], *, concurrency: int = 32,
                   duration_s: float = 5.0, max_requests: int | None = None,
                   timeout_s: float = 30.0, stop: asyncio.Event | None = None,
                   on_response: Callable[[httpx.Response], None] | None = None) -> LoadResult:
    """Drive ``url`` with ``concurrency`` clients cycling through ``payloads`` until
    ``duration_s`` has passed, ``max_requests`` were sent, or ``stop`` is set."""
    result = LoadResult()
    end = time.monotonic() + duration_s
    issued = 0
    stop = stop or asyncio.Event()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient, k: int) -> None:
        nonlocal issued
        i = k
        while time.monotonic() < end and not stop.is_set() and (
                max_requests is None or issued < max_requests):
            issued += 1
            p = payloads[i % len(payloads)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = await client.request(p.method, p.path, headers=p.headers,
                                         content=p.body or None)
            except httpx.ConnectError as exc:
                result.counts["refused"] += 1
                result.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)  # nobody listening: do not spin
                continue
            except httpx.TransportError as exc:
                result.counts["failed"] += 1
                result.errors[type(exc).__name__] += 1
                continue
            result.latencies_s.append(time.perf_counter() - t0)
            result.statuses[r.status_code] += 1
            result.counts[classify(r.status_code, r.headers)] += 1
            if on_response is not None:
                on_response(r)

    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, k) for k in range(concurrency)))
    result.duration_s = time.monotonic() - t0
    return result


# ---- run_raw: the cheapest client ----------------------------------------------------------
CHUNK = 1 << 20


async def one_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       raw: bytes) -> int:
    """Send one request, read its whole response; the status code.

    A body over 1 MB goes out as 1 MB slices of one memoryview, each drained before the next:
    one ``write()`` of 80 MB makes asyncio copy the unsent rest into its own buffer (80 MB of
    memcpy and page faults the server never sees), which made the client's CPU per spectrum
    swing 3x between runs of the exposure scenarios."""
    if len(raw) <= CHUNK:
        writer.write(raw)
    else:
        view = memoryview(raw)
        for i in range(0, len(raw), CHUNK):
            writer.write(view[i:i + CHUNK])
            await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    await reader.readexactly(int(m.group(1)) if m else 0)
    return status


async def run_raw(port: int, raw: bytes, rows: int, concurrency: int, max_requests: int,
                  seconds: float) -> dict:
    """Send ``raw`` (a ``Payload.encode()``, ``rows`` spectra) from ``concurrency`` keep-alive
    connections to 127.0.0.1:``port`` until ``max_requests`` were started or ``seconds``
    passed: spectra/s, p50/p95/p99 of the 200s, other statuses counted in ``errors``, and the
    client's CPU as a fraction of one core."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    started = 0
    end = time.perf_counter() + seconds

    async def worker():
        nonlocal started
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        try:
            while started < max_requests and time.perf_counter() < end:
                started += 1
                t0 = time.perf_counter()
                status = await one_exchange(reader, writer, raw)
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[status] = errors.get(status, 0) + 1
        finally:
            writer.close()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {"requests": len(latencies), "errors": errors, "wall_s": wall,
            "spectra_per_s": rows * len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "client_cpu": (time.process_time() - cpu0) / wall}


def run_client(coro):
    """Run the client's event loop: uvloop (installed with uvicorn[standard]) when present —
    the client shares the CPUs with the service, so every µs it spends is one the service
    cannot. BENCH_CLIENT_LOOP=asyncio forces the standard loop."""
    try:
        import uvloop  # optional: uvicorn[standard] brings it, the standard loop otherwise
    except ImportError:
        uvloop = None
    if uvloop is None or os.environ.get("BENCH_CLIENT_LOOP") == "asyncio":
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0, help="seconds")
    p.add_argument("--requests", type=int, default=None, help="stop after this many")
    p.add_argument("--rows", type=int, default=1, help="rows per OIP request")
    p.add_argument("--fits", type=Path, action="append", default=[],
                   help="send these files to /v1 (multipart) instead of OIP tensors")
    args = p.parse_args(argv)
    payloads = [fits_file(f) for f in args.fits] or [oip_rows(args.rows)]
    result = asyncio.run(run_load(args.url, payloads, concurrency=args.concurrency,
                                  duration_s=args.duration, max_requests=args.requests))
    print(result.summary())
    return 0 if result.counts["failed"] == 0 and result.counts["server_error"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
