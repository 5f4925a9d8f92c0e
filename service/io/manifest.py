"""A model version's ``manifest.json`` (contract in models/README.md), peeked at without
validating it: what a server choosing how to serve a model and `specula train saliency`
choosing an exporter both need, and training may import (it may not import inference)."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "manifest.json"  # its name in every version directory


def manifest_kind(version_dir: str | Path) -> str | None:
    """The ``kind`` a version directory's manifest declares, read without validating the rest
    (None when unreadable): the one place a manifest's kind is peeked at — the server choosing
    how to serve a model, `specula train saliency` choosing an exporter."""
    try:
        kind = json.loads((Path(version_dir) / MANIFEST).read_bytes()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None
