"""The command line every evaluation report shares: which repository, model and version to
run, and the Markdown table on stdout (what a model report pastes, with the command beside it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def report_main(doc: str, default_model: str,
                rows_of: Callable[[str, str, int | None], list[dict[str, Any]]],
                markdown: Callable[[list[dict[str, Any]]], str],
                argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--repository", default="models")
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--version", type=int, default=None)
    args = ap.parse_args(argv)
    print(markdown(rows_of(args.repository, args.model, args.version)))
    return 0
