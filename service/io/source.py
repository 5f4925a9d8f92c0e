"""Bytes in, safely: the one place that turns untrusted input into something readers can probe.

Readers never touch files or sockets: they get a :class:`Source` holding the raw bytes (already
size-checked), its display name, and a lazily opened FITS view. Every size an untrusted header
declares is checked against the bytes actually present *before* astropy allocates anything.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits

from .errors import InputError
from .fitsview import FitsFile

# One file. 128 MiB so that an exposure container of 2,436 fibres on a ~4,600-pixel native
# grid (FLUX + IVAR float32 + MASK uint8: 2,436 x 4,600 x 9 B = 101 MB) fits; 64 MiB did not.
DEFAULT_MAX_BYTES = 128 * 1024 * 1024
FITS_MAGIC = b"SIMPLE  ="
GZIP_MAGIC = b"\x1f\x8b"


def gunzip_bounded(data: bytes, max_bytes: int, *, source: str | None = None) -> bytes:
    """Decompress gzip without ever holding more than ``max_bytes`` of output.

    Why by hand: ``gzip.decompress`` and astropy's transparent gzip both inflate the whole
    stream first, which is exactly what a gzip bomb exploits. ``zlib``'s ``max_length`` lets
    us stop at the limit.
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise InputError("corrupt_file", f"bad gzip stream: {exc}", source=source) from None
    if len(out) > max_bytes or d.unconsumed_tail:
        raise InputError(
            "decompression_bomb",
            f"gzip expands beyond {max_bytes} bytes",
            source=source,
        )
    if not d.eof:
        raise InputError("corrupt_file", "truncated gzip stream", source=source)
    return out


def path_error(path: str | os.PathLike, exc: OSError) -> InputError:
    """The typed reason a path gave no bytes: a missing file, a directory and an unreadable
    file are told apart, so that a user fixes the right thing (not a "corrupt" typo)."""
    if isinstance(exc, FileNotFoundError):
        return InputError("file_not_found", "no such file", source=str(path))
    if isinstance(exc, IsADirectoryError):
        return InputError("not_a_file", "a directory, not a file", source=str(path))
    return InputError("corrupt_file", f"cannot read: {exc.strerror or exc}", source=str(path))


def read_path(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A file's bytes, size-checked before reading; every failure a typed InputError."""
    p = Path(path)
    try:
        if p.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(p))
        size = p.stat().st_size
        if size > max_bytes:
            raise InputError("too_large", f"{size} bytes > limit {max_bytes}", source=str(p))
        return p.read_bytes()
    except OSError as exc:
        raise path_error(p, exc) from None


@dataclass
class Source:
    """Raw input bytes plus a name; FITS is opened on first use and size-checked."""

    data: bytes
    name: str = "<bytes>"
    max_bytes: int = DEFAULT_MAX_BYTES
    content_type: str | None = None
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.data) > self.max_bytes:
            raise InputError(
                "too_large", f"{len(self.data)} bytes > limit {self.max_bytes}", source=self.name
            )
        if self.data[:2] == GZIP_MAGIC:
            self.data = gunzip_bounded(self.data, self.max_bytes, source=self.name)

    @classmethod
    def from_path(cls, path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> Source:
        return cls(data=read_path(path, max_bytes), name=str(path), max_bytes=max_bytes)

    @property
    def suffix(self) -> str:
        name = self.name.lower()
        name = name.removesuffix(".gz")
        return os.path.splitext(name)[1]

    @property
    def is_fits(self) -> bool:
        return self.data[: len(FITS_MAGIC)] == FITS_MAGIC

    @cached_property
    def fits(self) -> FitsFile:
        """The fast FITS view (headers + zero-copy arrays), every declared size checked.

        Readers use this first; it is ~10x cheaper than astropy (see fitsview.py)."""
        if not self.is_fits:
            raise InputError("corrupt_file", "not a FITS file", source=self.name)
        return FitsFile(self.data, name=self.name, max_bytes=self.max_bytes)

    @cached_property
    def hdul(self) -> fits.HDUList:
        """The astropy FITS view, for what :attr:`fits` leaves out (compressed images).

        Every HDU's declared data size (and a compressed HDU's decompressed size) is checked
        by :attr:`fits` before astropy parses anything, and again against astropy's view.
        """
        self.fits.hdus  # noqa: B018  (scans and size-checks every HDU first)
        try:
            hdul = fits.open(
                io.BytesIO(self.data),
                memmap=False,
                lazy_load_hdus=False,
                ignore_missing_simple=False,
                output_verify="silentfix",
            )
        except InputError:
            raise
        except Exception as exc:  # astropy raises OSError/ValueError/TypeError/... on garbage
            raise InputError("corrupt_file", f"unreadable FITS: {exc}", source=self.name)
        total = len(self.data)
        for i, hdu in enumerate(hdul):
            info = hdu.fileinfo() or {}
            start = info.get("datLoc", 0) or 0
            try:
                size = int(hdu.size)
            except Exception as exc:
                raise InputError("corrupt_file", f"HDU {i}: bad size ({exc})", source=self.name)
            if size < 0 or start + size > total:
                raise InputError(
                    "too_large" if size > self.max_bytes else "corrupt_file",
                    f"HDU {i} declares {size} data bytes; only {max(total - start, 0)} present",
                    source=self.name,
                )
        return hdul

    def hdu(self, key: int | str) -> fits.hdu.base._BaseHDU:
        """An HDU by index or EXTNAME, or a ``missing_hdu`` error."""
        try:
            return self.hdul[key]
        except (KeyError, IndexError):
            raise InputError("missing_hdu", f"no HDU {key!r}", source=self.name) from None

    def close(self) -> None:
        if "hdul" in self.__dict__:
            self.__dict__["hdul"].close()


def column(table: fits.FITS_rec | np.ndarray, name: str, *, source: str | None = None) -> np.ndarray:
    """A table column by case-insensitive name, or a ``missing_column`` error."""
    names = {n.lower(): n for n in (table.dtype.names or ())}
    key = names.get(name.lower())
    if key is None:
        raise InputError("missing_column", f"no column {name!r}", source=source)
    return np.asarray(table[key])


def npy_header(
    source: Source,
    error: type[InputError] = InputError,
    check_shape: Callable[[tuple[int, ...]], None] | None = None,
) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a ``.npy`` in ``source``, before any array exists.

    Why not just ``np.load(allow_pickle=False)``: it allocates what the header declares before
    noticing the bytes are missing. Here the declared size is checked against the limit and the
    bytes present first; object dtypes (pickle) and Fortran order are refused. ``check_shape``
    lets a caller refuse a shape (e.g. a cube of the wrong rank) before the size checks.
    """
    f = io.BytesIO(source.data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy version {version}")
    except (ValueError, SyntaxError, TypeError, OverflowError, EOFError) as exc:
        raise error("corrupt_file", f"bad npy header: {exc}", source=source.name) from None
    if dtype.hasobject:
        raise error("bad_dtype", "npy holds Python objects (pickle)", source=source.name)
    if fortran:
        raise error("bad_dtype", "Fortran-ordered npy not supported", source=source.name)
    shape = tuple(int(n) for n in shape)
    if check_shape is not None:
        check_shape(shape)
    offset = f.tell()
    expected = math.prod(shape) * dtype.itemsize
    present = len(source.data) - offset
    if expected > source.max_bytes:
        raise error("too_large", f"npy declares {expected} bytes", source=source.name)
    if expected != present:
        raise error("corrupt_file", f"npy declares {expected} data bytes; {present} present",
                    source=source.name)
    return shape, dtype, offset
