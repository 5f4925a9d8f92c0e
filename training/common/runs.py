"""Run directories, the same for both trainers: ``runs/<name>-v<version>-<UTC stamp>/`` holds
the run's config.json (verbatim), its log and its checkpoints, so that a run whose session
ended is continued with ``specula train {spectra,lightcone} --resume RUN_DIR`` from what is
in that directory alone, whatever the config file in the tree says by then."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Protocol


class Paused(Exception):
    """A session ended (its time budget or epoch count) with the run checkpointed, not
    finished: ``--resume RUN_DIR`` continues it."""


class NamedConfig(Protocol):
    name: str
    version: int


def new_run_dir(cfg: NamedConfig, runs_root: Path, config: dict[str, Any]) -> Path:
    """A fresh run directory with ``config`` (the trainer's ``config_to_dict(cfg)``) in it."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    run_dir = runs_root / f"{cfg.name}-v{cfg.version}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    return run_dir


def latest_run_dir(cfg: NamedConfig, runs_root: Path) -> Path:
    """The newest ``runs/<name>-v<version>-*`` (what a bare ``--resume`` continues)."""
    runs = sorted(p for p in runs_root.glob(f"{cfg.name}-v{cfg.version}-*")
                  if (p / "config.json").exists())
    if not runs:
        raise SystemExit(f"--resume: no run of {cfg.name} v{cfg.version} under {runs_root}")
    return runs[-1]


def add_resume_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", help="JSON config; with --resume and no RUN_DIR, the newest "
                                     "run of this config is continued")
    ap.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                    help="continue a paused run from its checkpoints (its own config.json)")


def resume_dir(a: argparse.Namespace, prog: str, load_config: Any,
               default_config: Path | None = None) -> Path | None:
    """The run to continue: --resume RUN_DIR, or the newest run of --config for a bare
    --resume; None for a new run (which then needs --config, or ``default_config``)."""
    config = a.config or default_config
    if a.resume is None:
        if not config:
            raise SystemExit(f"{prog}: --config or --resume RUN_DIR is required")
        return None
    if a.resume:
        return Path(a.resume)
    if not config:
        raise SystemExit(f"{prog}: a bare --resume needs --config")
    return latest_run_dir(load_config(config), Path(a.runs))
