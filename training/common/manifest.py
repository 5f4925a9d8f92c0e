"""What every exported model's manifest needs, whatever the task: checksum, provenance, an
atomic write. One copy, used by every ``export_onnx`` (spectra, lightcones, saliency)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit(repo: Path, *paths: str) -> str:
    """HEAD, suffixed ``-dirty`` when the sources behind the model (``paths``) have
    uncommitted changes: a manifest must not claim a commit its model did not come from."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=repo,
                               capture_output=True, text=True, check=False).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write-then-rename, so a reader (the service's reload) never sees half a manifest."""
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out_dir / "manifest.json")
