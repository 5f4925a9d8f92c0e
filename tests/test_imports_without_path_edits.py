"""Tests and benchmarks import each other's pieces as packages (``tests.support.X``,
``bench.common``), never by editing ``sys.path``: a path edit makes an import work only from
one directory, or only in one order, and hides which module is really loaded."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def path_edits(source: str) -> list[int]:
    """Line numbers where ``sys.path`` is read or changed."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys"]


def test_no_sys_path_in_tests_or_bench():
    found = {str(p.relative_to(REPO)): lines
             for tree in ("tests", "bench") for p in sorted((REPO / tree).rglob("*.py"))
             if (lines := path_edits(p.read_text()))}
    assert found == {}


def test_the_check_sees_an_edit():
    assert path_edits("import sys\nsys.path.insert(0, 'x')\n") == [2]
