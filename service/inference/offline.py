"""``specula classify FILE...``: the service's steps, without a server.

decode_request → preprocess → predict (straight on the session, in chunks of --batch-size)
→ encode_response, one JSON object per spectrum on stdout (or --out). A file that cannot be
read gives one line ``{"source": ..., "error": {"code": ..., "detail": ...}}`` (as does a
single spectrum that cannot be preprocessed) and the run goes on; the exit status is 1 when
any file failed, so scripts can tell.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import IO

import numpy as np
import orjson
from tqdm import tqdm

from service.spectra import Prepared, SpectrumError

from .pipeline import SpectrumPipeline, Upload
from .repository import ModelError, ModelRepository
from .runner import OnnxRunner
from .serving import check_contract


def load_pipeline(repository: str, model: str, version: int | None, device: str
                  ) -> SpectrumPipeline:
    mv = ModelRepository(repository).load(model, version)
    runner = OnnxRunner(mv.onnx, device=device)
    check_contract(mv, runner)
    return SpectrumPipeline(mv, runner, pool=None, max_file_bytes=1 << 31,
                            on_stats=lambda stats: None)


def classify_file(pipeline: SpectrumPipeline, path: str, batch_size: int,
                  fmt: str | None) -> Iterator[dict]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        yield {"source": path, "error": {"code": "corrupt_file", "detail": str(exc)}}
        return
    upload = Upload(data, path, None, fmt)
    try:
        spectra = pipeline.decode_request(upload)
    except SpectrumError as exc:
        yield {"source": path, "error": exc.to_dict()}
        return
    for i in range(0, len(spectra), batch_size):
        part = spectra[i:i + batch_size]
        prepared = pipeline.preprocess(part)
        good = [p.x for p in prepared if isinstance(p, Prepared)]
        outputs = pipeline.runner.run({pipeline.input_name: np.stack(good)}) if good else None
        yield from pipeline.encode_response(upload, part, prepared, outputs)


def write(out: IO[bytes], items: list[dict], as_array: bool) -> None:
    if as_array:
        out.write(orjson.dumps(items, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        for item in items:
            out.write(orjson.dumps(item) + b"\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="specula classify",
                                description="Classify spectrum files with no server running.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", default="spectrum_classifier")
    p.add_argument("--version", type=int, default=None, help="default: latest")
    p.add_argument("--repository", default="models", help="model repository root")
    p.add_argument("--output", choices=["jsonl", "json"], default="jsonl",
                   help="jsonl: one object per line (default); json: one array at the end")
    p.add_argument("--out", default="-", help="output file (default: stdout)")
    p.add_argument("--format", default=None, help="force a reader, e.g. sdss-spec")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        pipeline = load_pipeline(args.repository, args.model, args.version, args.device)
    except ModelError as exc:
        print(f"specula classify: {exc}", file=sys.stderr)
        return 2
    failed = 0
    collected: list[dict] = []
    stdout = nullcontext(sys.stdout.buffer)
    with stdout if args.out == "-" else open(args.out, "wb") as out:
        for path in tqdm(args.files, unit="file", file=sys.stderr, disable=args.quiet):
            items = list(classify_file(pipeline, path, args.batch_size, args.format))
            failed += any("error" in i for i in items)
            if args.output == "json":
                collected += items
            else:
                write(out, items, False)
                out.flush()
        if args.output == "json":
            write(out, collected, True)
    return 1 if failed else 0

