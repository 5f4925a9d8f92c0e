"""Redrock, the χ² baseline and the served v3 model on the same simulated test spectra.

    nice python -m evaluation.redrock_compare --config training/configs/spectra_v3.json --n 300 \
        --json /tmp/redrock.json > /tmp/redrock.md

Why: issue 17 sets the bar at "as good as the surveys' template fitter", and the only honest
way to say where v3 stands against it is to run that fitter — DESI's Redrock, the code behind
the issue's 95.5 % on real SDSS spectra — on the very spectra v3 and training/spectra/baseline.py see,
and score all three with one piece of code. Everything here is measured, nothing is quoted.

What each method gets:
- the config's simulated TEST split, read from the dataset cache (``data/``; the cache is not
  regenerated unless ``--allow-simulate``), a subset stratified so that each top class has a
  third of it and, within a class, every population (GALAXY, QSO) or star letter (STAR) is
  drawn in turn — rare populations (weak-line, host-dominated quasars) then have enough members
  to be read at all;
- v3: ``model.onnx`` through ONNX Runtime exactly as evaluation/compare_versions.py runs it;
- χ²: ``training.spectra.baseline.TemplateFitter`` on the same model inputs;
- Redrock (``zfind``, its defaults: 3 minima, its own redshift ranges and grids) on the model
  grid: flux = channel 0 (flux / s), ivar = w / (1 − w) = ivar·s² (the weight channel, clipped
  at w ≤ 0.999 as the baseline does). Redrock's amplitudes are linear, so fitting flux / s with
  ivar·s² gives the same χ²(z) up to the factor s² and the same minima. The resolution matrix
  is the identity: the simulated spectra are already at their survey's resolution and the
  SDSS eigen-templates at SDSS's, and the χ² baseline does not convolve either.

Template sets (``TEMPLATE_SETS``; built in a temporary directory that becomes
``RR_TEMPLATE_DIR``):
- ``sdss``: Redrock's own ``rrconvertSDSStemplates`` on spEigenGal-56436, spEigenQSO-55732 and
  spEigenStar-55734 (4 galaxy + 4 quasar eigenspectra, 123 single-spectrum stars) — what
  issue 17's 95.5 % used. spEigenCVstar is left out: the converter writes it as
  RRTYPE = STAR_CV, which Redrock has no redshift range for.
- ``desi``: the SDSS galaxy set (there is no DESI galaxy template in ../shared) + DESI's QSO
  LOZ/HIZ v1.1 and STAR A, B, CV, F, G, K, M, WD v0.1.
Converted SDSS files carry no RRIGM keyword, which Redrock ≥ 0.20 requires of templates it does
not know by version; it is set to "None" for them (galaxies: below z 1.7 the forest is out of
range; the SDSS quasar eigenspectra are empirical BOSS spectra that hold the mean forest
already, and the SDSS pipeline fits them without an IGM model). The DESI files keep theirs.

Also: the four real spectra of evaluation/real_spectra.py through both Redrock sets, on their
native pixels and on the model grid, beside v3's answer from the service's own path.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from scipy import sparse

from service.spectra import DEFAULT_GRID, Source, preprocess, read_spectra
from training.spectra.baseline import TemplateFitter
from training.spectra.config import load_config
from training.spectra.evaluate import SNR_BINS, Z_OUTLIER
from training.spectra.export_onnx import run_onnx
from training.spectra.labels import LABEL_NAMES, TOP_CLASSES, TOP_OF_LABEL
from training.spectra.measures import onnx_throughput, sigma_nmad, top_probs
from training.spectra.populations import POPULATIONS
from training.spectra.simulate import dataset_key, generate

from .real_spectra import REAL_SPECTRA, SHARED, classify_real, resolve

TOP = np.asarray(TOP_OF_LABEL)
SDSS_DIR = SHARED / "templates" / "sdss"
DESI_DIR = SHARED / "templates" / "desi-redrock"
TEMPLATE_SETS: dict[str, dict[str, list[str]]] = {
    "sdss": {"convert": ["spEigenGal-56436", "spEigenQSO-55732", "spEigenStar-55734"],
             "copy": []},
    "desi": {"convert": ["spEigenGal-56436"],
             "copy": ["rrtemplate-QSO-LOZ-v1.1", "rrtemplate-QSO-HIZ-v1.1",
                      *(f"rrtemplate-STAR-{s}-v0.1" for s in ("A", "B", "CV", "F", "G", "K",
                                                               "M", "WD"))]},
}
METHODS = ("v3", "chi2", "rr-sdss", "rr-desi")
METHOD_TITLES = {"v3": "v3 (ONNX Runtime)", "chi2": "χ² baseline (numpy)",
                 "rr-sdss": "Redrock, SDSS templates", "rr-desi": "Redrock, DESI QSO/STAR + SDSS galaxy"}


@dataclasses.dataclass
class Settings:
    """Every knob of a run, in one place (each flag is a field; all of them go into --json)."""

    config: str = "training/configs/spectra_v3.json"
    n: int = 300  # spectra in the stratified subset
    seed: int = 17  # subset draw
    model: str = "models/spectrum_classifier/3/model.onnx"
    data_dir: str = "data"
    sets: tuple[str, ...] = ("sdss", "desi")
    # Redrock multiprocessing workers. 1: zfind forks per template (125 SDSS ones), which cost
    # as much as they saved on the shared 2-core VM (30 spectra: 168 s with 1, 158 s with 2,
    # with 8x the system time)
    rr_procs: int = 1
    real: bool = True  # also the real spectra of evaluation/real_spectra.py
    allow_simulate: bool = False  # regenerate a missing test cache (slow: ~6000 spectra)
    json: str = ""  # write the raw results here too


# ------------------------------------------------------------------------------- the subset
def load_test(cfg, data_dir: Path, allow_simulate: bool) -> dict[str, np.ndarray]:
    """The config's whole test split, as compare_versions.py and evaluate.py see it."""
    folder = data_dir / f"spectra-test-{dataset_key(cfg.sim, cfg.seed, 'test', DEFAULT_GRID)}"
    if not folder.is_dir() and not allow_simulate:
        raise SystemExit(f"no cached test split at {folder} (the simulator code changed?); "
                         "pass --allow-simulate to generate it")
    return generate(cfg.sim, cfg.data.n_test, cfg.seed, "test", workers=cfg.data.workers,
                    cache_dir=data_dir, progress=False)


def strata(label: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Stratum of each spectrum: its population, except stars, which go by letter."""
    return np.where(TOP[label] == TOP_CLASSES.index("STAR"), 1000 + label, population)


def stratified(label: np.ndarray, population: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices (sorted) of ``n`` spectra: a third per top class, strata in turn within a class."""
    rng = np.random.default_rng(seed)
    st = strata(label, population)
    chosen: list[int] = []
    for k in range(len(TOP_CLASSES)):
        want = n // len(TOP_CLASSES) + (k < n % len(TOP_CLASSES))
        groups = [rng.permutation(np.flatnonzero((st == s) & (TOP[label] == k)))
                  for s in np.unique(st[TOP[label] == k])]
        taken: list[int] = []
        depth = 0
        while len(taken) < want and any(depth < len(g) for g in groups):
            taken += [int(g[depth]) for g in groups if depth < len(g)][: want - len(taken)]
            depth += 1
        chosen += taken
    return np.sort(np.asarray(chosen, dtype=int))


# ------------------------------------------------------------------------------- the scores
def star_letter(subtype: str) -> str:
    """A Redrock STAR subtype (SDSS "A0IVN (25642)", "LDWARF", "CALCIUMWD"; DESI "A", "WD")
    → the project's letter; '' when it has none."""
    s = subtype.strip().upper()
    if "WD" in s:
        return "WD"
    for prefix, letter in (("CARBON", "CARBON"), ("LDWARF", "L"), ("CV", "CV")):
        if s.startswith(prefix):
            return letter
    s = s.removeprefix("SD:").removeprefix("SD")
    return s[:1] if s[:1] and s[:1] in "OBAFGKM" else ""


def zstats(z_true: np.ndarray, z_pred: np.ndarray, threshold: float) -> dict[str, Any]:
    """σ_NMAD and outlier fraction of Δz/(1+z), as training/spectra/evaluate.py defines them."""
    if len(z_true) == 0:
        return {"n": 0, "sigma_nmad": float("nan"), "outliers": float("nan")}
    d = (z_pred - z_true) / (1 + z_true)
    return {"n": len(d), "sigma_nmad": sigma_nmad(d),
            "outliers": float(np.mean(np.abs(d) > threshold))}


def subsets(truth: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The selections every method is scored on: true class, population, S/N bin."""
    ty = TOP[truth["label"]]
    pops = {name: truth["population"] == i for i, name in enumerate(POPULATIONS)}
    snr = {f"S/N {lo:g}–{hi:g}" if hi < 1e8 else f"S/N ≥ {lo:g}":
           (truth["snr"] >= lo) & (truth["snr"] < hi) for lo, hi in SNR_BINS}
    return {"class": {c: ty == k for k, c in enumerate(TOP_CLASSES)},
            "population": {k: m for k, m in pops.items() if m.any()}, "snr": snr}


def score(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """One method's answers (``top`` class index, ``z``, ``letter`` for stars) against truth.

    Redshift statistics are over the spectra of the *true* class (as evaluate.py does), so a
    class error that also moves z counts as a redshift outlier.
    """
    ty = TOP[truth["label"]]
    right = pred["top"] == ty
    true_letter = np.array([LABEL_NAMES[lab].split(":", 1)[-1] for lab in truth["label"]])
    star = ty == TOP_CLASSES.index("STAR")
    out: dict[str, Any] = {
        "n": len(ty), "accuracy_top": float(right.mean()),
        "star_letter": float(np.mean(pred["letter"][star] == true_letter[star]))
        if star.any() else float("nan"),
        "confusion": [[int(((ty == a) & (pred["top"] == b)).sum()) for b in range(3)]
                      for a in range(3)]}
    for kind, masks in subsets(truth).items():
        out[kind] = {}
        for name, m in masks.items():
            row: dict[str, Any] = {"n": int(m.sum()),
                                   "accuracy_top": float(right[m].mean()) if m.any() else
                                   float("nan")}
            for k, c in enumerate(TOP_CLASSES):
                sel = m & (ty == k)
                if kind == "class" and name != c:
                    continue
                row[c] = zstats(truth["z"][sel].astype(np.float64), pred["z"][sel], Z_OUTLIER[c])
            out[kind][name] = row
    return out


# ------------------------------------------------------------------------------- the methods
def model_grid_inputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flux, ivar) in normalised units from model inputs: ivar·s² = w / (1 − w)."""
    f = x[:, 0].astype(np.float64)
    w = np.clip(x[:, 1].astype(np.float64), 0.0, 0.999)
    return f, w / (1 - w)


def run_v3(model: Path, x: np.ndarray, bench_batch: int, repeats: int) -> dict[str, Any]:
    out = run_onnx(model, x)
    probs = out["probs"]
    letters = np.array([LABEL_NAMES[i].split(":", 1)[-1] for i in probs[:, 2:].argmax(1) + 2])
    speed = onnx_throughput(model, x, bench_batch, repeats)
    return {"top": top_probs(probs).argmax(1), "z": out["z"].astype(np.float64),
            "letter": letters, "spectra_per_s": speed["spectra_per_s_median"],
            "timing": f"ONNX Runtime CPU, 2 intra-op threads, batch {bench_batch}, median of "
                      f"{repeats}"}


def run_chi2(x: np.ndarray) -> dict[str, Any]:
    fitter = TemplateFitter()
    fitter.fit(x[:4])  # warm-up (FFT plans, allocations), as baseline.compare_baseline does
    t0 = time.perf_counter()
    r = fitter.fit(x)
    dt = time.perf_counter() - t0
    letters = np.array([LABEL_NAMES[i].split(":", 1)[-1] for i in r["label"]])
    return {"top": TOP[r["label"]], "z": r["z"], "letter": letters,
            "spectra_per_s": len(x) / dt, "seconds": dt,
            "timing": "numpy float64, chunks of 50, after a 4-spectrum warm-up"}


def build_templates(name: str, root: Path) -> Path:
    """RR_TEMPLATE_DIR for template set ``name``: SDSS files through Redrock's own converter,
    DESI files copied, RRIGM set where a converted file lacks it (module docstring)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    tool = shutil.which("rrconvertSDSStemplates") or str(Path(sys.executable).parent /
                                                         "rrconvertSDSStemplates")
    for stem in TEMPLATE_SETS[name]["convert"]:
        subprocess.run([sys.executable, tool, "-i", str(SDSS_DIR / f"{stem}.fits"), "-o",
                        str(folder), "--version", stem], check=True, capture_output=True)
    for path in sorted(folder.glob("rrtemplate-*.fits")):  # only converted files so far
        with fits.open(path, mode="update") as h:
            if "RRIGM" not in h["BASIS_VECTORS"].header:
                h["BASIS_VECTORS"].header["RRIGM"] = ("None", "set by redrock_compare.py")
    for stem in TEMPLATE_SETS[name]["copy"]:
        shutil.copy(DESI_DIR / f"{stem}.fits", folder)
    return folder


def describe_templates(folder: Path) -> list[str]:
    rows = []
    for path in sorted(folder.glob("rrtemplate-*.fits")):
        hdr = fits.getheader(path, "BASIS_VECTORS")
        rows.append(f"{path.name}: {hdr['RRTYPE']} {hdr.get('RRSUBTYP', '')} "
                    f"({hdr['NAXIS2']} basis), version {hdr.get('VERSION')}, "
                    f"IGM {hdr.get('RRIGM', 'auto')}")
    return rows


def redrock_fit(spectra: list[tuple[np.ndarray, np.ndarray, np.ndarray]], template_dir: Path,
                procs: int, warm_up: bool, log: io.TextIOBase) -> dict[str, Any]:
    """Redrock's zfind on (wave, flux, ivar) triples; best fit (znum 0) per spectrum."""
    # Deferred: redrock is an optional evaluation dependency (numba, fitsio); CI may lack it.
    from redrock.targets import DistTargetsCopy, Spectrum, Target
    from redrock.templates import load_dist_templates
    from redrock.zfind import zfind

    identity: dict[int, sparse.dia_matrix] = {}
    targets = []
    for i, (wave, flux, ivar) in enumerate(spectra):
        R = identity.setdefault(len(wave), sparse.identity(len(wave), format="dia"))
        targets.append(Target(i, [Spectrum(wave.astype(np.float64), flux.astype(np.float64),
                                           ivar.astype(np.float64).copy(), R)]))
    os.environ["RR_TEMPLATE_DIR"] = str(template_dir)
    with contextlib.redirect_stdout(log):
        t0 = time.perf_counter()
        dtemplates = load_dist_templates(DistTargetsCopy(targets).wavegrids(), mp_procs=procs)
        t_templates = time.perf_counter() - t0
        if warm_up:  # numba compiles on first use; a survey run pays that once
            zfind(DistTargetsCopy(targets[:2]), dtemplates, procs)
        t0 = time.perf_counter()
        _, zfit = zfind(DistTargetsCopy(targets), dtemplates, procs)
        dt = time.perf_counter() - t0
    best = {int(r["targetid"]): r for r in zfit[zfit["znum"] == 0]}
    rows = [best[i] for i in range(len(targets))]
    spectype = np.array([str(r["spectype"]).strip() for r in rows])
    subtype = np.array([str(r["subtype"]).strip() for r in rows])
    return {"top": np.array([TOP_CLASSES.index(s) for s in spectype]),
            "z": np.array([float(r["z"]) for r in rows]),
            "zwarn": np.array([int(r["zwarn"]) for r in rows]),
            "letter": np.array([star_letter(s) if t == "STAR" else ""
                                for t, s in zip(spectype, subtype)]),
            "spectype": spectype, "subtype": subtype,
            "spectra_per_s": len(targets) / dt, "seconds": dt, "template_seconds": t_templates,
            "timing": f"zfind, {procs} process(es), after a 2-spectrum warm-up; template "
                      f"rebinning ({t_templates:.0f} s, once per wavelength grid) not counted"}


# ------------------------------------------------------------------------------- real spectra
def real_inputs() -> list[dict[str, Any]]:
    """Each reachable real spectrum as (wave, flux, ivar): native pixels and the model grid."""
    out = []
    for entry in REAL_SPECTRA:
        path = resolve(entry)
        if path is None:
            continue
        _, spectra = read_spectra(Source.from_path(path))
        s = spectra[0]
        good = ~s.mask & (s.ivar > 0) & np.isfinite(s.flux)
        native = (s.wavelength, np.where(good, s.flux, 0.0), np.where(good, s.ivar, 0.0))
        f, iv = model_grid_inputs(preprocess(s, DEFAULT_GRID).x[None])
        out.append({"entry": entry, "native": native,
                    "grid": (DEFAULT_GRID.wavelength, f[0], iv[0])})
    return out


def run_real(sets: dict[str, Path], procs: int, log) -> list[dict[str, Any]]:
    items = real_inputs()
    v3 = {Path(r["entry"].file).name: r["answer"] for r in classify_real(version=3)}
    for kind in ("native", "grid"):
        for name, folder in sets.items():
            r = redrock_fit([it[kind] for it in items], folder, procs, False, log)
            for i, it in enumerate(items):
                it[f"rr-{name}-{kind}"] = {"class": str(r["spectype"][i]),
                                          "subtype": str(r["subtype"][i]),
                                          "z": float(r["z"][i]), "zwarn": int(r["zwarn"][i])}
    for it in items:
        it["v3"] = v3.get(Path(it["entry"].file).name, {})
    return items


# ------------------------------------------------------------------------------- the report
def _f(v: float, fmt: str) -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, fmt)


def render(st: Settings, n: int, methods: dict[str, dict[str, Any]],
           scores: dict[str, dict[str, Any]], real: list[dict[str, Any]]) -> str:
    ms = [m for m in METHODS if m in scores]
    head = "| | " + " | ".join(METHOD_TITLES[m] for m in ms) + " |\n|---|" + "---|" * len(ms)
    L = [(f"Stratified subset of the simulated test split of `{st.config}`: {n} spectra "
         f"(seed {st.seed})."), "", head]
    L.append("| top-class accuracy | " + " | ".join(
        _f(scores[m]["accuracy_top"], ".3f") for m in ms) + " |")
    L.append("| star letter (true stars) | " + " | ".join(
        _f(scores[m]["star_letter"], ".3f") for m in ms) + " |")
    L.append("| spectra/s | " + " | ".join(
        _f(methods[m]["spectra_per_s"], ".3g") for m in ms) + " |")
    for m in ms:
        if "zwarn" in methods[m]:
            zw = methods[m]["zwarn"] != 0
            L.append(f"| {METHOD_TITLES[m]}: ZWARN ≠ 0 | " + " | ".join(
                f"{zw.mean():.3f}" if x == m else "" for x in ms) + " |")
    L += ["", ("Per true class: top-class accuracy; z σ_NMAD / outlier fraction (|Δz|/(1+z) > "
          "0.01 GALAXY and STAR, > 0.05 QSO)."), "", head]
    for c in TOP_CLASSES:
        L.append(f"| {c} (n={scores[ms[0]]['class'][c]['n']}) accuracy | " + " | ".join(
            _f(scores[m]["class"][c]["accuracy_top"], ".3f") for m in ms) + " |")
        L.append(f"| {c} z σ_NMAD / outliers | " + " | ".join(
            f"{_f(scores[m]['class'][c][c]['sigma_nmad'], '.2e')} / "
            f"{_f(scores[m]['class'][c][c]['outliers'], '.3f')}" for m in ms) + " |")
    L += ["", "Confusion (true → called), counts:", ""]
    for m in ms:
        cm = scores[m]["confusion"]
        cells = [f"{TOP_CLASSES[a][0]}→{TOP_CLASSES[b][0]} {cm[a][b]}"
                 for a in range(3) for b in range(3) if a != b]
        L.append(f"- {METHOD_TITLES[m]}: " + ", ".join(cells))
    for kind, title in (("population", "Per population"), ("snr", "Per S/N bin")):
        L += ["", (f"{title}: top-class accuracy | z outlier fraction of its true class "
              "(galaxy / QSO where both are present)."), "", head]
        for name, row in scores[ms[0]][kind].items():
            cells = []
            for m in ms:
                r = scores[m][kind][name]
                zs = [r[c] for c in ("GALAXY", "QSO") if r[c]["n"]]
                zcell = " / ".join(_f(z["outliers"], ".2f") for z in zs) or "—"
                cells.append(f"{_f(r['accuracy_top'], '.3f')} \\| {zcell}")
            L.append(f"| {name} (n={row['n']}) | " + " | ".join(cells) + " |")
    L += ["", "Galaxy and QSO z σ_NMAD per S/N bin (galaxy / QSO):", "", head]
    for name, row in scores[ms[0]]["snr"].items():
        cells = [" / ".join(_f(scores[m]["snr"][name][c]["sigma_nmad"], ".1e")
                            for c in ("GALAXY", "QSO")) for m in ms]
        L.append(f"| {name} (n={row['n']}) | " + " | ".join(cells) + " |")
    L += ["", "Timing: " + "; ".join(f"{METHOD_TITLES[m]}: {methods[m]['timing']}" for m in ms)]
    if real:
        L += ["", ("Real spectra (truth from evaluation/real_spectra.py). Redrock: class subtype "
              "z [ZWARN], on native pixels | on the model grid."), ""]
        sets = [k.removeprefix("rr-").removesuffix("-native") for k in real[0]
                if k.startswith("rr-") and k.endswith("-native")]
        L.append("| spectrum | truth | z true | v3 | " + " | ".join(
            f"Redrock {s}" for s in sets) + " |")
        L.append("|---|---|---|---|" + "---|" * len(sets))
        for it in real:
            e, a = it["entry"], it["v3"]
            v3 = (f"{a['label']} P={a['class_probability']:.3f} z={a['z']:.5f}"
                  if "label" in a else "error")
            cells = []
            for s in sets:
                cells.append(" \\| ".join(
                    f"{r['class']} {r['subtype']} z={r['z']:.5f}" + (f" [{r['zwarn']}]"
                                                                      if r["zwarn"] else "")
                    for r in (it[f"rr-{s}-native"], it[f"rr-{s}-grid"])))
            L.append(f"| {Path(e.file).name} | {e.top_class} ({e.note or e.label_source}) | "
                     f"{e.z:.5f} | {v3} | " + " | ".join(cells) + " |")
    return "\n".join(L)


def _plain(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return o


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Settings):
        if isinstance(f.default, bool):
            ap.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                            default=f.default)
        elif isinstance(f.default, tuple):
            ap.add_argument("--" + f.name.replace("_", "-"), nargs="+", default=list(f.default))
        else:
            ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default),
                            default=f.default)
    st = Settings(**vars(ap.parse_args(argv)))
    cfg = load_config(st.config)
    log = sys.stderr
    data = load_test(cfg, Path(st.data_dir), st.allow_simulate)
    idx = stratified(data["label"].astype(int), data["population"], st.n, st.seed)
    truth = {k: data[k][idx] for k in ("label", "z", "snr", "population")}
    truth["label"] = truth["label"].astype(int)
    x = data["x"][idx].astype(np.float32)
    print(f"{len(idx)} test spectra; running v3", file=log, flush=True)
    methods = {"v3": run_v3(Path(st.model), x, cfg.eval.bench_batch, cfg.eval.bench_repeats)}
    print("χ² baseline", file=log, flush=True)
    methods["chi2"] = run_chi2(x)
    f, iv = model_grid_inputs(x)
    spectra = [(DEFAULT_GRID.wavelength, f[i], iv[i]) for i in range(len(x))]
    rr_log = io.StringIO()
    template_rows: dict[str, list[str]] = {}
    real: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rrtemplates-") as tmp:
        folders = {s: build_templates(s, Path(tmp)) for s in st.sets}
        for s, folder in folders.items():
            template_rows[s] = describe_templates(folder)
            print(f"Redrock, {s} templates", file=log, flush=True)
            methods[f"rr-{s}"] = redrock_fit(spectra, folder, st.rr_procs, True, rr_log)
            print(f"  {methods[f'rr-{s}']['seconds']:.0f} s", file=log, flush=True)
        if st.real:
            print("real spectra", file=log, flush=True)
            real = run_real(folders, st.rr_procs, rr_log)
    scores = {m: score(p, truth) for m, p in methods.items()}
    print(render(st, len(idx), methods, scores, real))
    print("\nTemplate sets:\n")
    for s, rows in template_rows.items():
        print(f"- {s}: {len(rows)} files; " + "; ".join(rows[:3]) +
              (f"; … ({len(rows) - 3} more)" if len(rows) > 3 else ""))
    if st.json:
        keep = ("spectra_per_s", "seconds", "template_seconds", "timing")
        Path(st.json).write_text(json.dumps(_plain({
            "settings": st, "n": len(idx), "indices": idx, "scores": scores,
            "methods": {m: {k: v for k, v in p.items() if k in keep} for m, p in methods.items()},
            "truth": truth, "answers": {m: {k: p[k] for k in ("top", "z", "letter", "zwarn")
                                            if k in p} for m, p in methods.items()},
            "templates": template_rows,
            "real": [{k: (v if k != "entry" else dataclasses.asdict(v)) for k, v in it.items()
                      if k not in ("native", "grid")} for it in real]}), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
