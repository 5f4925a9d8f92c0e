"""Archive job throughput vs the raw ONNX Runtime throughput of the model, on this machine.

Writes N real-format SDSS files to a temp directory — copies of the real
``../shared/data/sdss/spec-1198-52669-0063.fits`` (604 kB: COADD, SPECOBJ with 126 columns,
SPZLINE, per-exposure HDUs), or with ``--synthetic`` astropy-written spec-lite files from
tests/support/spectrum_writers.py — then measures, with the shipped model:

1. raw ORT: ``OnnxRunner.run`` on already-preprocessed batches of ``--batch-size``, with the
   service's session options, best of 1 and 2 intra-op threads (the fair ceiling: whatever
   the archive job does, it cannot beat the model alone on the whole machine);
2. the archive job (``specula classify DIR --output X.parquet``: walk, decode in worker
   processes, infer, Parquet) end to end, wall time from start to committed output;
3. the same job on Ray Data (local Ray started by the bench, not counted), on ``--ray-files``.

"steady" excludes what happens before the first unit is written (worker processes importing
numpy/astropy, ~3 s on a loaded 2-core machine; Ray actors loading the model): the rate a
20-million-spectrum run converges to. "end to end" is the whole job on N files.

Prints spectra/s and the ratio archive / raw (goal ≥ 0.8). The files were just written, so
they are read from the page cache: this measures decode + inference, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from service.archive import ArchiveJob
from service.archive.infer import infer_unit
from service.archive.inputs import walk_inputs
from service.archive.local import run_local
from service.archive.prepare import decoding_pipeline, prepare_unit
from service.archive.ray_engine import run_ray
from service.archive.schema import schema_for
from service.archive.units import plan_units
from service.inference.kinds.spectrum import build_pipeline
from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner
from service.spectra import Source, preprocess, read_spectra
from tests.support.spectrum_writers import sdss_like_spectrum, write_sdss_spec

REPO = Path(__file__).resolve().parents[1]

REAL = REPO.parent / "shared" / "data" / "sdss" / "spec-1198-52669-0063.fits"


def write_files(root: Path, n: int, synthetic: bool) -> list[bytes]:
    if synthetic or not REAL.exists():
        templates = [write_sdss_spec(sdss_like_spectrum(seed=s), variant="lite", fiber=s + 1)
                     for s in range(16)]
    else:
        templates = [REAL.read_bytes()]
    for i in range(n):
        d = root / f"{i // 1000:04d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"spec-{i:06d}.fits").write_bytes(templates[i % len(templates)])
    return templates


def raw_ort(onnx: bytes, x: np.ndarray, threads: int, seconds: float) -> float:
    runner = OnnxRunner(onnx, device="cpu", intra_op_threads=threads)
    runner.run({"spectrum": x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        runner.run({"spectrum": x})
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def stage_cpu_ms(model, root: Path, files: int, batch_size: int) -> dict[str, float]:
    """CPU ms per spectrum of each stage, in this process (CPU time: fairer than wall time on a
    shared machine, and what the N-node estimate in docs/archive.md scales)."""

    decoder, pipeline = decoding_pipeline(model), build_pipeline(model, "cpu", 1)
    schema = schema_for(model)
    paths = sorted(str(p) for p in root.rglob("*.fits"))[:files]
    units = list(plan_units(walk_inputs(paths), lambda f: 0))
    infer_unit(pipeline, prepare_unit(decoder, units[0], None), batch_size, schema)  # warm
    out = {}
    for name, fmt in (("decode+preprocess (identify)", None),
                      ("decode+preprocess (--format sdss-spec)", "sdss-spec")):
        c = time.process_time()
        prepared = [prepare_unit(decoder, u, fmt) for u in units]
        out[name] = (time.process_time() - c) / len(paths) * 1e3
    c = time.process_time()
    blobs = [pickle.loads(pickle.dumps(p)) for p in prepared]
    out["to/from worker (pickle)"] = (time.process_time() - c) / len(paths) * 1e3
    c = time.process_time()
    for p in blobs:
        infer_unit(pipeline, p, batch_size, schema)
    out["infer+encode+rows"] = (time.process_time() - c) / len(paths) * 1e3
    xs = np.stack([p.x for u in blobs for f in u.files for p in f.prepared])
    c = time.process_time()
    for i in range(0, len(xs), 64):
        pipeline.runner.run({"spectrum": xs[i:i + 64]})
    out["of which ORT (1 thread, batches of 64)"] = (time.process_time() - c) / len(xs) * 1e3
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=3000)
    p.add_argument("--ray-files", type=int, default=1000, help="0: skip the Ray run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--raw-seconds", type=float, default=6.0)
    p.add_argument("--workers", type=int, default=None, help="decode processes (default auto)")
    p.add_argument("--synthetic", action="store_true", help="written spec-lite files")
    p.add_argument("--repository", default=str(REPO / "models"))
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)

    model = ModelRepository(args.repository).load("spectrum_classifier")
    tmp = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    try:
        templates = write_files(tmp / "in", args.files, args.synthetic)
        spectra = [s for t in templates for s in read_spectra(Source(t))[1]]
        grid = model.manifest.spectrum_grid()
        x1 = np.stack([preprocess(s, grid).x for s in spectra])
        x = np.resize(x1, (args.batch_size, *x1.shape[1:]))
        raw = {th: raw_ort(model.onnx, x, th, args.raw_seconds) for th in (1, 2)}
        stages = stage_cpu_ms(model, tmp / "in", min(args.files, 512), args.batch_size)
        best = max(raw.values())

        job = ArchiveJob([str(tmp / "in")], str(tmp / "out.parquet"),
                         repository=args.repository, batch_size=args.batch_size,
                         workers=args.workers, progress=False)
        t0 = time.perf_counter()
        summary = run_local(job)
        archive = summary.spectra_ok / (time.perf_counter() - t0)
        steady = summary.steady_spectra_per_s or archive

        ray_rate = ray_steady = None
        if args.ray_files:
            import ray  # the optional `ray` extra: imported only for --ray-files

            ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
                     object_store_memory=256 * 1024 * 1024, logging_level="ERROR")
            try:
                listing = tmp / "ray.txt"
                files = sorted(str(f) for f in (tmp / "in").rglob("*.fits"))[:args.ray_files]
                listing.write_text("\n".join(files) + "\n")
                rjob = ArchiveJob([str(listing)], str(tmp / "ray.parquet"),
                                  repository=args.repository, batch_size=args.batch_size,
                                  progress=False)
                t0 = time.perf_counter()
                rs = run_ray(rjob)
                ray_rate = rs.spectra_ok / (time.perf_counter() - t0)
                ray_steady = rs.steady_spectra_per_s
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = {"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
                      f"load average {os.getloadavg()[0]:.1f}",
           "files": args.files, "file_bytes": len(templates[0]),
           "source": "synthetic spec-lite" if args.synthetic or not REAL.exists()
           else "copies of the real SDSS spec file",
           "raw_ort_spectra_per_s": {f"{k}_threads": round(v, 1) for k, v in raw.items()},
           "archive_spectra_per_s": round(archive, 1),
           "archive_steady_spectra_per_s": round(steady, 1),
           "ratio_steady": round(steady / best, 3), "ratio_end_to_end": round(archive / best, 3),
           "archive_summary": summary.to_dict(),
           "stage_cpu_ms_per_spectrum": {k: round(v, 3) for k, v in stages.items()},
           "ray_files": args.ray_files, "ray_spectra_per_s": ray_rate and round(ray_rate, 1),
           "ray_steady_spectra_per_s": ray_steady and round(ray_steady, 1)}
    print(f"# bench_archive: {out['machine']}; {args.files} files ({out['source']}, "
          f"{out['file_bytes']} B each); model {model.name} v{model.version}, "
          f"batch {args.batch_size}")
    print(f"raw ONNX Runtime:  {raw[1]:8.1f} spectra/s (1 thread)  {raw[2]:8.1f} (2 threads)")
    print(f"archive job:       {steady:8.1f} spectra/s steady (after the first unit), "
          f"{archive:.1f} end to end incl. start-up (walk + decode + infer + Parquet)")
    print(f"ratio archive/raw: {steady / best:8.3f} steady, {archive / best:.3f} end to end  "
          "(goal >= 0.8)")
    if ray_rate is not None:
        print(f"ray engine:        {ray_steady or 0:8.1f} spectra/s steady, {ray_rate:.1f} end "
              f"to end ({args.ray_files} files; local Ray start excluded, actor start "
              "included)")
    print("CPU ms per spectrum, by stage (single process, first 512 files):")
    for k, v in stages.items():
        print(f"  {k:<40} {v:6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
