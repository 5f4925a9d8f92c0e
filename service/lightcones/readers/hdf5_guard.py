"""Vetting an uploaded HDF5 file before anything reads it: no byte of an upload may make the
server open, read or probe another resource.

Why this exists: HDF5 is the one input format whose bytes can *name other files*, and the
library follows those names when a dataset is read or a path is merely tested with ``in``:
  - **external raw storage** (a dataset's data lives at ``(path, offset, size)`` on the
    reader's disk): an upload pointing at ``/etc/shadow`` was read, and one pointing at a
    missing path answered with an error that revealed whether the path exists;
  - **virtual datasets** (VDS: a dataset mapped onto datasets of other files, or of "." — the
    file re-opened by name): reading one from an in-memory file crashed the whole process;
  - **external links** (``ExternalLink(filename, path)``) open another file on traversal;
  - **soft links** can dangle, point at each other in a cycle, or alias an external link;
  - filters other than the few we need run plug-in code (HDF5 loads filter plug-ins from
    ``HDF5_PLUGIN_PATH`` by id).

So the file is opened from the request bytes (h5py's file-object driver: no file name of
ours, no path to resolve against) and the *link structure* is walked with ``H5Lvisit``, which
reports each link's type without following soft or external links and visits every group once
(so hard-link cycles terminate). Every object reached through hard links is checked at the
property-list level — layout, external-file count, filter ids — which reads object headers
only, never raw data. Anything outside the plain subset that 21cmFAST and ordinary cube
writers produce is refused with its own machine-readable code, before the reader asks for a
single name.
"""

from __future__ import annotations

import io
import posixpath

import h5py
from h5py import h5d, h5i, h5l, h5o, h5z

from ..errors import LightconeError

# deflate, shuffle, Fletcher-32 (HDF5 built-ins) and h5py's own LZF: what cube writers use
ALLOWED_FILTERS = frozenset({h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32,
                             h5z.FILTER_LZF})
SAFE_LAYOUTS = frozenset({h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED})
MAX_LINKS = 10_000  # 21cmFAST writes ~20; a link bomb must not turn vetting into a DoS


def open_vetted(data: bytes, source: str | None = None) -> h5py.File:
    """The HDF5 file in ``data``, opened read-only from memory and vetted (see module doc).

    Raises :class:`LightconeError` with ``corrupt_file`` for bytes HDF5 cannot parse and one
    of the ``hdf5_*`` codes for a structure that is refused."""
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except Exception as exc:  # noqa: BLE001 — h5py raises OSError for garbage, others for odd files
        raise LightconeError("corrupt_file", f"unreadable HDF5: {exc}", source=source) from None
    try:
        vet(f, source)
    except BaseException:
        f.close()
        raise
    return f


def vet(f: h5py.File, source: str | None = None) -> None:
    """Refuse external links, bad soft links, virtual/external-storage datasets and unknown
    filters anywhere in the file, reading object headers only."""
    links = _links(f, source)
    hard = {name for name, kind, _ in links if kind == h5l.TYPE_HARD}
    for name, kind, target in links:
        if kind == h5l.TYPE_EXTERNAL:
            raise LightconeError("hdf5_external_link", f"/{name} is an external link to another "
                                 "file; uploads must be self-contained", source=source)
        if kind == h5l.TYPE_SOFT:
            _check_soft(name, target, hard, source)
        elif kind != h5l.TYPE_HARD:
            raise LightconeError("hdf5_external_link", f"/{name} is a user-defined link "
                                 f"(type {kind}); only hard and soft links are read",
                                 source=source)
    for name in sorted(hard):
        _check_object(f, name, source)


def _links(f: h5py.File, source: str | None) -> list[tuple[str, int, str | None]]:
    """Every link in the file as (path, type, soft-link target), by H5Lvisit (no link is
    followed; each group is entered once)."""
    out: list[tuple[str, int, str | None]] = []

    def visit(name: bytes, info) -> int | None:
        path = name.decode("utf-8", "surrogateescape")
        target = None
        if info.type == h5l.TYPE_SOFT:
            target = f.id.links.get_val(name).decode("utf-8", "surrogateescape")
        out.append((path, info.type, target))
        return 1 if len(out) > MAX_LINKS else None

    try:
        f.id.links.visit(visit, info=True)
    except Exception as exc:  # noqa: BLE001 — a corrupt B-tree or heap surfaces here
        raise LightconeError("corrupt_file", f"unreadable HDF5 link structure: {exc}",
                             source=source) from None
    if len(out) > MAX_LINKS:
        raise LightconeError("hdf5_too_complex", f"more than {MAX_LINKS} links",
                             source=source)
    return out


def _check_soft(name: str, target: str | None, hard: set[str], source: str | None) -> None:
    """A soft link must resolve, in one step, to an object reached by hard links: so it cannot
    dangle, cycle, or lead on to an external link."""
    parent = posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join("/" + parent, target or "")).lstrip("/")
    if resolved not in hard:
        raise LightconeError("hdf5_bad_link", f"/{name} is a soft link to {target!r}, which is "
                             "not an object of this file", source=source)


def _check_object(f: h5py.File, name: str, source: str | None) -> None:
    try:
        oid = h5o.open(f.id, name.encode("utf-8", "surrogateescape"))
    except Exception as exc:  # noqa: BLE001
        raise LightconeError("corrupt_file", f"cannot open /{name}: {exc}",
                             source=source) from None
    if h5i.get_type(oid) != h5i.DATASET:
        return
    dcpl = oid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        raise LightconeError("hdf5_virtual_dataset", f"/{name} is a virtual dataset (maps "
                             "other files); uploads must hold their own data", source=source)
    if layout not in SAFE_LAYOUTS:
        raise LightconeError("hdf5_virtual_dataset", f"/{name} has storage layout {layout}",
                             source=source)
    if dcpl.get_external_count() > 0:
        raise LightconeError("hdf5_external_storage", f"/{name} keeps its data in external "
                             "files; uploads must hold their own data", source=source)
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            raise LightconeError("hdf5_filter", f"/{name} uses HDF5 filter {code}; allowed: "
                                 "deflate, shuffle, fletcher32, lzf", source=source)
