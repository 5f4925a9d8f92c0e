"""Inputs are walked as a stream, in a deterministic order, from files, dirs and path lists."""

from __future__ import annotations

from service.archive.inputs import count_inputs, walk_inputs


def test_directories_walked_recursively_and_lists_read(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    for rel in ("a/2.fits", "a/1.fits", "b/deep/3.fits", "b/.hidden.fits"):
        (tmp_path / rel).write_bytes(b"x" * 7)
    listing = tmp_path / "todo.txt"
    listing.write_text(f"# one path per line\n{tmp_path / 'a' / '1.fits'}\n\n{tmp_path / 'b'}\n")
    got = list(walk_inputs([str(tmp_path / "a"), str(listing), str(tmp_path / "missing.fits")]))
    assert [f.path for f in got] == [
        str(tmp_path / "a" / "1.fits"), str(tmp_path / "a" / "2.fits"),
        str(tmp_path / "a" / "1.fits"), str(tmp_path / "b" / "deep" / "3.fits"),
        str(tmp_path / "missing.fits")]
    assert [f.size for f in got] == [7, 7, 7, 7, -1]  # a missing file is kept, to be reported
    assert count_inputs([str(tmp_path / "a"), str(listing)]) == 4
