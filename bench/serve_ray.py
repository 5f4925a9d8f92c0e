"""The same model behind Ray Serve (``@serve.batch``), for bench/bench_service.py --compare ray.

Benchmark-only (``pip install -e .[bench]``); not part of the service. What is the same as in
Specula, by import rather than copy: the ONNX file from the model repository, ORT session
options (``OnnxRunner``), decoding, preprocessing and response encoding
(``SpectrumPipeline``), and the OIP tensor codec (``service.api.oip``). What differs is the
server: Ray Serve's HTTP proxy (a separate actor process that forwards each request to the
replica over Ray's RPC) and its ``@serve.batch`` queue instead of Specula's batcher.

``@serve.batch`` counts calls, not rows, and cannot split a call; so a request is cut here
into chunks of at most ``max_batch_size`` rows and ``batch_size_fn`` counts rows, which is
what a Ray user has to write to batch by spectra.

    .venv/bin/python -m bench.serve_ray --port 8100 [--repository models] [--max-batch-size 64]

Routes: ``POST /v1/spectra:classify`` (multipart or raw body), ``POST /v2/models/{name}/infer``
(JSON or binary tensors), ``GET /v2/health/ready``. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

REPO_ROOT = Path(__file__).resolve().parents[1]

from service.api.errors import failure_of
from service.api.oip import decode_infer_request, encode_infer_response
from service.inference.pipeline import SpectrumPipeline, Upload
from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner

MAX_FILE_BYTES = 256 * 1024 * 1024


class RayBatchedPipeline(SpectrumPipeline):
    """Specula's pipeline with Ray's batcher in place of its own: ``classify_upload`` (decode
    and preprocess on the pool, encode on the loop) runs unchanged and calls this ``infer``."""

    def __init__(self, *args, submit, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.submit = submit

    async def infer(self, x: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        step = self.batcher.max_batch_size
        parts = await asyncio.gather(*(self.submit(x[i:i + step])
                                       for i in range(0, len(x), step)))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def rows_in(chunks: list[np.ndarray]) -> int:
    return sum(len(c) for c in chunks)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024,
                  max_queued_requests=-1)
class SpeculaOnRay:
    def __init__(self, repository: str, model: str, max_batch_size: int,
                 intra_op_threads: int) -> None:
        mv = ModelRepository(repository).load(model)
        self.name, self.version = mv.name, mv.version
        self.runner = OnnxRunner(mv.onnx, device="auto", intra_op_threads=intra_op_threads)
        # as in Specula: decode/preprocess on a pool of one thread per CPU, one ORT run at a
        # time on its own thread so the replica's event loop keeps accepting requests
        self.pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="preprocess")
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="ort")
        self.pipeline = RayBatchedPipeline(
            mv, self.runner, pool=self.pool, max_file_bytes=MAX_FILE_BYTES,
            on_stats=lambda stats: None, max_batch_size=max_batch_size, submit=self.model_rows)
        self.model_rows.set_max_batch_size(max_batch_size)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0, batch_size_fn=rows_in)
    async def model_rows(self, chunks: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        x = np.concatenate(chunks)
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self.model_thread, self.runner.run,
                                         {self.pipeline.input_name: x})
        bounds = np.cumsum([0] + [len(c) for c in chunks])
        return [{k: v[a:b] for k, v in out.items()} for a, b in itertools.pairwise(bounds)]

    async def __call__(self, request: Request) -> Response:
        path = request.url.path
        try:
            if path == "/v1/spectra:classify" and request.method == "POST":
                return await self.classify(request)
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                return await self.infer(request)
            if path in ("/v2/health/ready", "/v2/health/live"):
                return Response(b'{"ready":true}', media_type="application/json")
            return Response(b'{"error":"not found"}', 404, media_type="application/json")
        except Exception as exc:  # noqa: BLE001 — Specula's own table: same status, same code
            f = failure_of(exc)
            return Response(orjson.dumps({"error": f.detail, "code": f.code}), f.status,
                            media_type="application/json")

    async def classify(self, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            uploads = [Upload(await v.read(), v.filename or k, v.content_type)
                       for k, v in form.multi_items() if not isinstance(v, str)]
            await form.close()
        else:
            uploads = [Upload(await request.body(), request.headers.get("x-filename", "body"),
                              request.headers.get("content-type"))]
        results = await self.pipeline.classify(uploads)
        return Response(orjson.dumps({"model": self.name, "version": self.version,
                                      "results": results}), media_type="application/json")

    async def infer(self, request: Request) -> Response:
        body = await request.body()
        header_length = request.headers.get("inference-header-content-length")
        loop = asyncio.get_running_loop()
        req, arrays = await loop.run_in_executor(self.pool, decode_infer_request, body,
                                                 header_length)
        outputs = await self.pipeline.infer(arrays[self.pipeline.input_name])
        content, headers = encode_infer_response(self.name, self.version, req, outputs)
        return Response(content, headers=headers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--repository", default=str(REPO_ROOT / "models"))
    p.add_argument("--model", default="spectrum_classifier")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="as SPECULA_INTRA_OP_THREADS (0 = usable CPUs - 1)")
    p.add_argument("--num-replicas", type=int, default=1,
                   help="Ray Serve replicas (compared with Specula's --workers)")
    args = p.parse_args(argv)
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="warning",
             configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    app = SpeculaOnRay.options(num_replicas=args.num_replicas).bind(
        args.repository, args.model, args.max_batch_size, args.intra_op_threads)
    serve.run(app, route_prefix="/")
    print(f"ray serve ready on 127.0.0.1:{args.port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
