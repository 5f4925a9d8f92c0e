"""The dynamic batcher around ONNX Runtime, in one process, without HTTP.

Why: on an H200 the served model's batches took ~0.5 s each inside ORT under 32 concurrent
single-spectrum requests, against ~2 ms for the same batch in raw ORT
(bench/results/2026-11-26-gpu-h200.md). This script takes HTTP, decoding and the service's
other threads away and leaves the batcher: ``--concurrency`` asyncio clients each submit
``--rows`` rows at a time to a DynamicBatcher whose function is the runner, as in the
service. It prints the batches' sizes and their time inside the function, next to raw ORT at
the same sizes. If the batches are slow here too, the cause is between the batcher's worker
thread and ORT; if not, it is in what the service adds around them.

    .venv/bin/python -m bench.bench_batching --device cuda --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

from service.inference.batcher import DynamicBatcher
from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner, auto_concurrent_batches, bucket_rows
from service.metrics import BatchStats


async def drive(runner: OnnxRunner, x1: np.ndarray, args) -> tuple[list[BatchStats], float, int]:
    stats: list[BatchStats] = []
    name = runner.input_names[0]

    def predict(rows: list[np.ndarray]) -> list[int]:
        runner.run({name: np.stack(rows)})
        return list(range(len(rows)))

    batcher = DynamicBatcher(
        predict, max_batch_size=args.batch, max_queue_rows=1 << 20,
        max_concurrent_batches=args.instances or auto_concurrent_batches(runner),
        balance_delay_s=0.005,
        on_stats=lambda s: stats.append(s) if isinstance(s, BatchStats) else None)
    rows = [x1] * args.rows
    draw = np.random.default_rng(1)
    done = 0
    end = time.perf_counter() + args.duration

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            n = int(draw.integers(1, args.rows + 1)) if args.vary else args.rows
            await batcher.submit(rows[:n])
            done += n

    await batcher.submit(rows)  # warm
    stats.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    wall = time.perf_counter() - t0
    await batcher.close()
    return stats, wall, done


def raw_ms(runner: OnnxRunner, x1: np.ndarray, n: int, repeats: int = 20) -> float:
    """Median ms of one run of ``n`` rows, back to back on this thread."""
    x = np.ascontiguousarray(np.broadcast_to(x1, (n, *x1.shape)))
    name = runner.input_names[0]
    runner.run({name: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner.run({name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", default=str(REPO_ROOT / "models"))
    p.add_argument("--model", default="spectrum_classifier")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rows", type=int, default=1, help="rows per submit")
    p.add_argument("--vary", action="store_true",
                   help="each submit draws its row count from 1..--rows, so consecutive "
                        "batches differ in shape (what HTTP arrivals do to the service)")
    p.add_argument("--batch", type=int, default=1024, help="max batch size")
    p.add_argument("--instances", type=int, default=0,
                   help="concurrent batches (0 = the service's default for the provider)")
    p.add_argument("--intra-op-threads", type=int, default=1)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--per-shape", choices=["auto", "on", "off"], default="auto",
                   help="one ORT session per padded batch shape (auto: on CUDA only); "
                        "'off' on CUDA reproduces the plan rebuilds the runner avoids")
    args = p.parse_args(argv)

    mv = ModelRepository(args.repository).load(args.model)
    x1 = np.random.default_rng(0).normal(size=mv.manifest.inputs[0].shape[1:]).astype(np.float32)
    per_shape = {"auto": None, "on": True, "off": False}[args.per_shape]
    runner = OnnxRunner(mv.onnx, device=args.device, intra_op_threads=args.intra_op_threads,
                        warm_rows=args.batch, session_per_shape=per_shape)
    print(f"{mv.name} v{mv.version}, {runner.provider}, per-shape sessions "
          f"{runner.session_per_shape}, {args.intra_op_threads} intra-op "
          f"thread(s), cpus {len(os.sched_getaffinity(0))}, concurrency {args.concurrency} × "
          f"{'1..' if args.vary else ''}{args.rows} row(s)")
    stats, wall, done = asyncio.run(drive(runner, x1, args))
    # binned by the padded shape a CUDA batch runs at (bucket_rows); raw ORT at that shape
    bins = Counter(bucket_rows(s.size) for s in stats)
    compute = sum(s.compute_s for s in stats)
    print(f"{done:,} rows in {wall:.2f} s = {done / wall:,.0f} rows/s; {len(stats)} batches, "
          f"inside the batch function {compute:.2f} s ({compute / wall:.0%} of the wall time)")
    print(f"{'rows ≤':>6} {'batches':>8} {'ms per batch in the batcher':>28} {'raw ORT ms':>11}")
    for n, count in sorted(bins.items()):
        ms = np.median([s.compute_s for s in stats if bucket_rows(s.size) == n]) * 1e3
        print(f"{n:>6} {count:>8} {ms:>28.2f} {raw_ms(runner, x1, n):>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
