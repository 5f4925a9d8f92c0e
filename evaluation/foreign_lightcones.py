"""Lightcones from other 21cmFAST setups, with their true parameters, through a served
lightcone_regressor version exactly as ``/v1/lightcones:infer`` answers them.

Why: a regressor can be 0.95 R² on its own simulator and 2.5σ off on a cube written by another
21cmFAST version, box and resolution. The shared ``../shared/data/21cmfast/simrun_0.h5`` is
such a cube (21cmFAST v3, 150 Mpc box of 5 Mpc cells, z 5.5–35; its true parameters are in
its attributes). The check is the one a user would make: does each parameter's interval hold
the truth, and does the answer say how the cube differs from the training set?

``python -m evaluation.foreign_lightcones [--version N]`` prints the Markdown table of a model
report. Whether the truth falls inside is the report's business, not a test's: these cubes are
the check, never a target to tune to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.inference.offline import estimate_lightcone_file

from .report_cli import report_main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOREIGN = ("21cmfast/simrun_0.h5",)  # under ../shared/data


def foreign_files() -> list[Path]:
    return [SHARED / f for f in FOREIGN if (SHARED / f).is_file()]


def estimate_foreign(repository: str = "models", model: str = "lightcone_regressor",
                     version: int | None = None) -> list[dict[str, Any]]:
    """Per file and parameter: truth, answer, pull = (mean − truth)/σ."""
    rows = []
    for path in foreign_files():
        answer = estimate_lightcone_file(repository, model, version, str(path))
        truth = answer.get("file_parameters", {})
        for name, p in answer["parameters"].items():
            if name not in truth:
                continue
            pull = (p["mean"] - truth[name]) / p["sigma"]
            rows.append({"file": path.name, "parameter": name, "truth": truth[name],
                         "mean": p["mean"], "sigma": p["sigma"], "pull": pull,
                         "in_68": abs(pull) <= 1.0, "in_95": abs(pull) <= 1.96,
                         "patch_chi2": p.get("patch_chi2"), "answer": answer})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| file | parameter | truth | estimate ± σ | pull | in 68 % | in 95 % |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['parameter']} | {r['truth']:.4g} | "
                     f"{r['mean']:.4g} ± {r['sigma']:.3g} | {r['pull']:+.2f} | "
                     f"{'yes' if r['in_68'] else 'no'} | {'yes' if r['in_95'] else 'no'} |")
    seen = {}
    for r in rows:
        seen.setdefault(r["file"], r["answer"])
    for name, a in seen.items():
        td = a.get("training_distance")
        said = []
        if td:
            said.append(f"- training distance: score {td['score']:.2f} (≤ 1 inside), nearest "
                        f"kind of training input {td['nearest']}")
        lines += ["", f"{name}: sky {a.get('sky')}", *(f"- note: {n}" for n in a["notes"]),
                  *said,
                  *(f"- warning: {w}" for w in a["warnings"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return report_main(__doc__, "lightcone_regressor", estimate_foreign, markdown, argv)


if __name__ == "__main__":
    raise SystemExit(main())
