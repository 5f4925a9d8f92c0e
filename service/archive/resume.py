"""What is already done: the resume keys of every committed part of the output.

A file counts as done for a model when a committed part holds a row with its key, and the key
is a hash of (path, size, mtime, model name, version, sha256): a file that changed, or a new
model, is work again. Keys are read back as one sorted int64 array (8 bytes per row, 160 MB
for 20 million), not as a set of Python strings. Parts are committed whole units at a time
(writer.py), so a key present means every row of that file is present.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from service.inference.repository import ModelVersion

from .inputs import InputFile


def model_identity(model: ModelVersion) -> str:
    m = model.manifest
    return f"{m.name}\0{m.version}\0{m.sha256.lower()}"


def input_key(entry: InputFile, identity: str) -> int:
    """A signed 64-bit key for (file, size, mtime, model)."""
    h = hashlib.blake2b(f"{entry.path}\0{entry.size}\0{entry.mtime_ns}\0{identity}".encode(),
                        digest_size=8).digest()
    return int.from_bytes(h, "little", signed=True)


def committed_parts(output: Path) -> list[Path]:
    return sorted(output.glob("part-*.parquet"))


def done_keys(output: Path) -> np.ndarray:
    """Sorted unique keys of every committed row (empty when there is no output yet)."""
    arrays = [pq.read_table(p, columns=["input_key"]).column(0).to_numpy()
              for p in committed_parts(output)]
    if not arrays:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(arrays))


def failed_keys(output: Path) -> np.ndarray:
    """Sorted unique keys of committed files with an error row (the file or a spectrum of
    it): a rerun skips them as done, and still has to report them (exit status 1)."""
    arrays = [pq.read_table(p, columns=["input_key"], filters=[("status", "=", "error")])
              .column(0).to_numpy() for p in committed_parts(output)]
    if not arrays:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(arrays))


def is_done(keys: np.ndarray, key: int) -> bool:
    i = int(np.searchsorted(keys, key))
    return i < keys.shape[0] and int(keys[i]) == key
