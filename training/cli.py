"""``specula train TASK ...``: one entry for every trainer.

Each task (``spectra``, ``lightcone``, ``saliency``) owns its command line; this module lists
them for ``specula train --help``, picks the module and hands it everything after the task
name, ``-h`` included. ``saliency`` picks the exporter by the kind in the model's manifest.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from service.io.manifest import manifest_kind

# Every task owns its command line; `specula train TASK ...` hands it the rest of argv.
TASKS = {
    "spectra": "training.spectra.cli",  # the spectrum classifier
    "lightcone": "training.lightcone.cli",  # 21cm lightcone regressor
    "saliency": "training.spectra.export_saliency",  # gradient graphs beside a shipped model
}
TASK_HELP = {
    "spectra": "simulate, train, calibrate and export the spectrum classifier",
    "lightcone": "build the 21cmFAST dataset, train and export the lightcone regressor "
                 "(`specula train lightcone --help`)",
    "saliency": "export the gradient graphs (saliency.onnx, introspect.onnx) beside a "
                "shipped model (`specula train saliency --help`)",
}
# `specula train saliency --model-dir DIR`: the exporter is chosen by the manifest's kind
SALIENCY_BY_KIND = {"lightcone-regressor": "training.lightcone.export_saliency"}


def saliency_module(argv: list[str]) -> str:
    """The exporter for the model ``--model-dir`` names (the spectrum one by default)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--model-dir")
    a, _ = ap.parse_known_args(argv)
    if a.model_dir:
        kind = manifest_kind(a.model_dir)
        if kind in SALIENCY_BY_KIND:
            return SALIENCY_BY_KIND[kind]
    return TASKS["saliency"]


def build_parser() -> argparse.ArgumentParser:
    """One subparser per task, so that ``specula train --help`` lists them all; each task
    takes everything after its name, ``-h`` too."""
    ap = argparse.ArgumentParser(prog="specula train",
                                 description="train a model and export it to models/")
    tasks = ap.add_subparsers(dest="task", metavar="TASK", title="tasks", required=True)
    for name in TASKS:
        tasks.add_parser(name, help=TASK_HELP[name], add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a, rest = build_parser().parse_known_args(argv)
    module = saliency_module(rest) if a.task == "saliency" else TASKS[a.task]
    return int(importlib.import_module(module).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
