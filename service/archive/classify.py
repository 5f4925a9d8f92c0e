"""``specula classify FILE...``: the service's steps, without a server.

decode_request → preprocess → predict (straight on the session, in chunks of --batch-size)
→ encode_response (service.inference.offline), one JSON object per spectrum on stdout (or
--out). A file that cannot be read gives one line ``{"source": ..., "error": {"code": ...,
"detail": ...}}`` (as does a single spectrum that cannot be preprocessed) and the run goes on;
the exit status is 1 when any file failed, so scripts can tell.

With a table output (``--output results.fits``; ``.fits``/``.fit``, ``.ecsv``, ``.vot``/``.xml``)
the same results become one astropy Table with units (``service.inference.tables``), written
atomically when the run ends; JSON lines then go only to an ``--out`` file, if one is named.

With a Parquet output (``--output results.parquet``) or ``--engine ray`` the same command is
an archive job instead (this package: directories walked, decoding in worker processes or Ray
tasks, resumable atomic Parquet parts; docs/archive.md).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import IO

import orjson
from tqdm import tqdm

from service.inference.offline import classify_file, load_pipeline
from service.inference.repository import ModelError, repository_hint
from service.inference.tables import results_table, table_format, write_table
from service.settings import command_model_repository

from .cli import run_archive


def write(out: IO[bytes], items: list[dict], as_array: bool) -> None:
    if as_array:
        out.write(orjson.dumps(items, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        for item in items:
            out.write(orjson.dumps(item) + b"\n")


def parquet_output(args: argparse.Namespace) -> str | None:
    """The Parquet output directory when this run is an archive job, else None."""
    if args.output.endswith(".parquet"):
        return args.output
    if args.output == "parquet" or args.engine == "ray" or args.out.endswith(".parquet"):
        return None if args.out == "-" else args.out
    return None


def json_sink(path: str | None) -> AbstractContextManager[IO[bytes] | None]:
    """Where JSON goes: nowhere (a table run with no --out file), stdout ("-") or a file."""
    if path is None:
        return nullcontext(None)
    return nullcontext(sys.stdout.buffer) if path == "-" else open(path, "wb")


def table_output(args: argparse.Namespace) -> str | None:
    """The FITS/ECSV/VOTable file this run writes (by extension of --output or --out)."""
    for path in (args.output, args.out):
        if table_format(path) is not None:
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="specula classify",
        description="Classify spectrum files with no server running. JSON lines by default; "
                    "with a Parquet output (--output results.parquet), an archive job: "
                    "directories walked, lists of paths read, decoding in worker processes, "
                    "resumable (docs/archive.md).")
    p.add_argument("files", nargs="+", metavar="PATH",
                   help="files; for Parquet output also directories and .txt/.lst path lists")
    p.add_argument("--model", default="spectrum_classifier",
                   help="model name in the repository (default: spectrum_classifier)")
    p.add_argument("--version", type=int, default=None, help="default: latest")
    p.add_argument("--repository", default=str(command_model_repository()), metavar="DIR",
                   help="model repository root (default: SPECULA_MODEL_REPOSITORY, else the "
                        "models/ shipped with the package)")
    p.add_argument("--output", default="jsonl",
                   metavar="jsonl|json|parquet|DIR.parquet|FILE.fits|FILE.ecsv|FILE.vot",
                   help="jsonl: one object per line (default); json: one array at the end; "
                        "a path ending in .fits/.fit, .ecsv or .vot/.xml: one table with "
                        "units (astropy); parquet or a path ending in .parquet: the archive "
                        "job")
    p.add_argument("--out", default="-", help="output file (default: stdout; with a table "
                   "--output, none); the Parquet directory with --output parquet")
    p.add_argument("--format", default=None, help="force a reader, e.g. sdss-spec")
    p.add_argument("--batch-size", type=int, default=256,
                   help="spectra per ONNX Runtime call (default: 256)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="execution provider: cuda when present with auto (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    archive = p.add_argument_group("archive job (Parquet output)")
    archive.add_argument("--engine", choices=["local", "ray"], default="local",
                         help="local worker processes (default) or a Ray cluster")
    archive.add_argument("--address", default=None,
                         help="Ray cluster address (default: start a local Ray)")
    archive.add_argument("--workers", type=int, default=None,
                         help="decode processes (local) or concurrent decode tasks (ray); "
                              "default: usable CPUs - 1")
    archive.add_argument("--actors", type=int, default=None,
                         help="ray: inference actors (default: one per GPU, else CPUs / 4)")
    archive.add_argument("--files-per-unit", type=int, default=None,
                         help="files per work unit (the grain of decoding and commits)")
    args = p.parse_args(argv)
    if args.output not in ("jsonl", "json", "parquet") and not args.output.endswith(".parquet") \
            and table_format(args.output) is None:
        p.error("--output must be jsonl, json, parquet or a path ending in .parquet, .fits, "
                ".fit, .ecsv, .vot or .xml")
    if args.output == "parquet" or args.engine == "ray" or args.output.endswith(".parquet") \
            or args.out.endswith(".parquet"):
        target = parquet_output(args)
        if target is None:
            p.error("a Parquet run needs a directory: --output results.parquet")
        return run_archive(args, target)
    try:
        pipeline = load_pipeline(args.repository, args.model, args.version, args.device)
    except ModelError as exc:
        print(f"specula classify: {exc}\n  {repository_hint(args.repository)}", file=sys.stderr)
        return 2
    table_path = table_output(args)
    json_out = args.out if table_path is None or args.out not in ("-", table_path) else None
    keep = args.output == "json" or table_path is not None
    failed = 0
    collected: list[dict] = []
    with json_sink(json_out) as out:
        for path in tqdm(args.files, unit="file", file=sys.stderr, disable=args.quiet):
            items = list(classify_file(pipeline, path, args.batch_size, args.format))
            failed += any("error" in i for i in items)
            if keep:
                collected += items
            if out is not None and args.output != "json":
                write(out, items, False)
                out.flush()
        if out is not None and args.output == "json":
            write(out, collected, True)
    if table_path is not None:
        write_table(results_table(collected, pipeline.model), table_path)
    return 1 if failed else 0
