"""Flat, named columns for a result's probabilities, shared by every tabular output.

The API nests probabilities in dicts keyed by label; FITS, ECSV, VOTable and Parquet readers
want one scalar column per quantity, with a name a FITS ``TTYPE`` or a SQL engine accepts.
Both the astropy tables (``tables.py``) and the archive's Parquet schema take their names
from here, so the same quantity has the same column name in every format.

Top classes become ``p_GALAXY``, ``p_QSO``, ``p_STAR`` (the class sums); labels become
``p_STAR_A`` (``STAR:A``, characters other than letters, digits and ``_`` replaced by ``_``).
A label named like its top class and alone in it (``GALAXY``) is the same number as the class
column and gets none of its own; any other clash gets a ``_label`` suffix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .postprocess import LabelMap

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name)


@dataclass(frozen=True, slots=True)
class ProbabilityColumn:
    name: str  # the column: p_STAR_A
    key: str  # the label or class it holds: STAR:A
    kind: str  # "class" (from class_probabilities) or "label" (from probabilities)

    @property
    def description(self) -> str:
        if self.kind == "class":
            return f"probability of top class {self.key} (sum of its labels)"
        return f"probability of label {self.key}"

    def value(self, result: dict[str, Any]) -> float:
        source = "class_probabilities" if self.kind == "class" else "probabilities"
        return result[source][self.key]


def probability_columns(labels: LabelMap) -> list[ProbabilityColumn]:
    """Class columns in ``top_classes`` order, then label columns in label order."""
    cols = [ProbabilityColumn(f"p_{safe_name(t)}", t, "class") for t in labels.top_classes]
    taken = {c.name for c in cols}
    sizes = labels.membership.sum(axis=0)
    for k, label in enumerate(labels.labels):
        name = f"p_{safe_name(label)}"
        if name in taken:
            t = int(labels.membership[k].argmax())
            if labels.top_classes[t] == label and sizes[t] == 1:
                continue  # the class column already holds exactly this number
            name += "_label"
            while name in taken:
                name += "_"
        cols.append(ProbabilityColumn(name, label, "label"))
        taken.add(name)
    return cols


def probability_values(result: dict[str, Any], columns: list[ProbabilityColumn]
                       ) -> dict[str, float]:
    return {c.name: c.value(result) for c in columns}
