"""Per-spectrum cost of decode and preprocessing, per format, against the model's forward pass.

    .venv/bin/python -m bench.bench_preprocess [--quick] [--json out.json]

For each format: decode (bytes already in memory → Spectrum list, as the service receives
them), resample+normalise (``preprocess``), their total, all in µs per spectrum, and the ratio
of that total to the ONNX forward pass per spectrum at batch 256 (goal ≤ 0.5). The forward
pass uses the newest ``models/spectrum_classifier/<version>/model.onnx``; without one it
exports a stand-in (training/spectra/model.py's ensemble with random weights, else a plain
GaSNet-style CNN) and says so. Each number is the median over repeated batches, so a busy
machine shifts both sides of the ratio alike; the machine and its load are printed.
Reference rows show what the fast paths buy: astropy decode of the SDSS file, and the general
resampling path on the same (log-linear) spectrum.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from service.spectra import (
    DEFAULT_GRID,
    Source,
    SpectrumError,
    make_spectrum,
    preprocess,
    read_spectra,
)
from service.spectra.preprocess import (
    Resampled,
    _resample_general,
    normalise,
    pixel_edges,
    preprocess_many,
)
from service.spectra.readers.exposure import write_exposure

SDSS_FILE = REPO.parent / "shared" / "data" / "sdss" / "spec-1198-52669-0063.fits"
BATCH = 256


def per_call_us(fn: Callable[[], object], calls: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) µs per call: medians over ``repeats`` batches of ``calls`` calls.

    CPU time (``process_time``, all threads of this process) is what a call costs the
    machine; wall time is what a caller waits, and includes waiting for a core when other
    work shares the machine."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        wall.append((time.perf_counter() - t0) / calls * 1e6)
        cpu.append((time.process_time() - c0) / calls * 1e6)
    return statistics.median(wall), statistics.median(cpu)


# --- inputs, one per format ----------------------------------------------------------------

def _sdss_like(n: int = 3800, seed: int = 0, loglam0: float = 3.5797):
    rng = np.random.default_rng(seed)
    loglam = (loglam0 + 1e-4 * np.arange(n)).astype(np.float32).astype(np.float64)
    wave = 10**loglam
    flux = 20 + 5 * np.sin(wave / 300) + rng.normal(0, 0.5, n)
    return make_spectrum(wave, flux, rng.uniform(2, 6, n), rng.random(n) < 0.01,
                         {"object_id": f"obj-{seed}"})


def _fits_bytes(hdus) -> bytes:
    from astropy.io import fits
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def inputs(n_fibres: int) -> dict[str, bytes]:
    from astropy.io import fits
    s = _sdss_like()
    out: dict[str, bytes] = {}
    if SDSS_FILE.exists():
        out["sdss-spec (real file)"] = SDSS_FILE.read_bytes()
    p = fits.PrimaryHDU(np.vstack([s.flux, s.flux, 1 / np.sqrt(s.ivar), s.mask,
                                   np.zeros(s.npix)]).astype(np.float32))
    p.header["COEFF0"], p.header["COEFF1"] = 3.5797, 1e-4
    out["sdss-spspec"] = _fits_bytes([p])
    try:
        import specutils
        d = Path(specutils.__file__).parent / "io/default_loaders/tests/desi_test_data"
        out["desi-coadd (real file, 5 targets)"] = (d / "coadd-sv3-dark-26065.fits").read_bytes()
    except ImportError:
        pass
    n = s.npix
    cols = [fits.Column("WAVE", f"{n}D", unit="nm", array=(s.wavelength / 10)[None]),
            fits.Column("FLUX", f"{n}E", unit="erg cm**(-2) s**(-1) angstrom**(-1)",
                        array=s.flux[None].astype(np.float32)),
            fits.Column("ERR", f"{n}E", unit="erg cm**(-2) s**(-1) angstrom**(-1)",
                        array=(1 / np.sqrt(s.ivar))[None].astype(np.float32))]
    ph = fits.PrimaryHDU()
    ph.header["PRODCATG"] = "SCIENCE.SPECTRUM"
    out["eso-sdp"] = _fits_bytes([ph, fits.BinTableHDU.from_columns(cols, name="SPECTRUM")])
    out["arrays (json)"] = json.dumps({"wavelength": s.wavelength.tolist(),
                                       "flux": s.flux.tolist(), "ivar": s.ivar.tolist()}).encode()
    buf = io.BytesIO()
    np.save(buf, np.vstack([s.wavelength, s.flux, s.ivar, s.mask]))
    out["arrays (npy)"] = buf.getvalue()
    fibres = [_sdss_like(seed=i) for i in range(n_fibres)]
    out[f"specula-exposure ({n_fibres} fibres)"] = write_exposure(fibres)
    return out


# --- the forward pass ----------------------------------------------------------------------

def latest_model() -> Path | None:
    root = REPO / "models" / "spectrum_classifier"
    versions = sorted((int(p.name), p) for p in root.glob("*") if p.name.isdigit()) \
        if root.exists() else []
    for _, p in reversed(versions):
        if (p / "model.onnx").exists():
            return p / "model.onnx"
    return None


def stand_in_model() -> tuple[bytes, str]:
    import torch
    from torch import nn
    torch.manual_seed(0)
    try:
        from training.spectra.config import ModelConfig
        from training.spectra.model import Ensemble, SpectrumNet
        model = Ensemble([SpectrumNet(ModelConfig(), 13, DEFAULT_GRID.npix) for _ in range(3)])
        what = "STAND-IN: training/spectra/model.py ensemble (3 members, default config, random weights)"
    except Exception as exc:  # noqa: BLE001  training code absent or changed: a plain CNN
        layers, c = [], 2
        for w in (32, 64, 128, 256):
            layers += [nn.Conv1d(c, w, 5, padding=2), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(4)]
            c = w
        model = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, 13))
        what = f"STAND-IN: GaSNet-style 1D CNN, random weights (training model unavailable: {exc})"
    model.eval()
    buf = io.BytesIO()
    torch.onnx.export(model, torch.zeros(2, 2, DEFAULT_GRID.npix), buf,
                      input_names=["spectrum"], dynamic_axes={"spectrum": {0: "N"}},
                      dynamo=False)
    return buf.getvalue(), what


def forward_us(x: np.ndarray, repeats: int) -> tuple[tuple[float, float], str]:
    import onnxruntime as ort
    path = latest_model()
    if path is not None:
        model, what = path.read_bytes(), f"model: {path.relative_to(REPO)}"
        manifest = path.parent / "manifest.json"
        if manifest.exists():  # a model on another grid: feed it its own pixel count
            npix = int(json.loads(manifest.read_text()).get("grid", {}).get("npix", x.shape[-1]))
            if npix != x.shape[-1]:
                x = np.resize(x, (2, npix))
    else:
        model, what = stand_in_model()
    try:  # the service's own session options (threads = physical cores, no spinning)
        from service.inference.runner import session_options
        so, how = session_options(), "service session options"
    except Exception:  # noqa: BLE001  (service not importable here: ORT defaults)
        so, how = ort.SessionOptions(), "default session options"
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    batch = np.ascontiguousarray(np.broadcast_to(x, (BATCH, *x.shape)), dtype=np.float32)
    wall, cpu = per_call_us(lambda: sess.run(None, {name: batch}), 1, repeats)
    return (wall / BATCH, cpu / BATCH), f"{what}; {how}"


# --- main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, 300-fibre exposure")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    calls, repeats = (20, 5) if args.quick else (100, 9)
    n_fibres = 300 if args.quick else 2436

    print(f"# bench_preprocess: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"numpy {np.__version__}, grid {DEFAULT_GRID.npix} px")
    rows = []
    for fmt, data in inputs(n_fibres).items():
        _, spectra = read_spectra(Source(data, name=fmt))
        n_spec = len(spectra)
        usable = []
        for s in spectra:
            try:
                preprocess(s)
                usable.append(s)
            except SpectrumError:  # e.g. DESI test targets with no good pixels
                continue
        file_calls = max(1, calls // max(1, n_spec // 20))
        dw, dc = per_call_us(lambda data=data, fmt=fmt: read_spectra(Source(data, name=fmt)),
                             file_calls, repeats)
        # as the service does it: a file's spectra together (blocks where they share a grid)
        sample = usable[: min(len(usable), 512)]
        pw, pc = per_call_us(lambda sample=sample: preprocess_many(sample),
                             max(1, calls // len(sample)), repeats)
        rows.append({"format": fmt, "spectra_per_input": n_spec,
                     "decode_us": dw / n_spec, "preprocess_us": pw / len(sample),
                     "decode_cpu_us": dc / n_spec, "preprocess_cpu_us": pc / len(sample)})

    # reference rows: what the fast paths replace
    refs = {}
    if SDSS_FILE.exists():
        from astropy.io import fits
        raw = SDSS_FILE.read_bytes()

        def astropy_decode():
            with fits.open(io.BytesIO(raw), memmap=False) as h:
                c = h[1].data
                make_spectrum(10 ** c["loglam"].astype(float), c["flux"], c["ivar"],
                              c["and_mask"] != 0)
                h[2].data["CLASS"]
        refs["astropy decode of the SDSS file (not used)"] = per_call_us(
            astropy_decode, max(1, calls // 5), repeats)[1]
        _, (s,) = read_spectra(Source(raw))
        good = (~s.mask).astype(float)
        var = np.divide(1.0, s.ivar, out=np.zeros_like(s.ivar), where=s.ivar > 0)

        def general():
            e_in = pixel_edges(s.wavelength)
            w, f, v = _resample_general(e_in, good, s.flux * good, var * good, DEFAULT_GRID)
            use = w > 0
            normalise(Resampled(np.where(use, f / np.where(use, w, 1), 0), v, ~use, 1.0))
        refs["general resampling path on the SDSS spectrum (not used)"] = per_call_us(
            general, calls, repeats)[1]
        refs["preprocess (aligned fast path) on the SDSS spectrum"] = per_call_us(
            lambda: preprocess(s), calls, repeats)[1]

    x = preprocess(read_spectra(Source(SDSS_FILE.read_bytes()))[1][0]).x if SDSS_FILE.exists() \
        else np.zeros((2, DEFAULT_GRID.npix), np.float32)
    (fwd, fwd_cpu), what = forward_us(x, repeats)

    print(f"# forward pass: {what}")
    print(f"# ONNX Runtime CPU, batch {BATCH}: {fwd:.0f} µs wall, {fwd_cpu:.0f} µs CPU "
          "per spectrum")
    print(f"{'format':38s} {'decode':>8s} {'resamp+norm':>11s} {'total':>8s} {'ratio':>6s}"
          f" | {'CPU: total':>10s} {'ratio':>6s}")
    for r in rows:
        r["total_us"] = r["decode_us"] + r["preprocess_us"]
        r["total_cpu_us"] = r["decode_cpu_us"] + r["preprocess_cpu_us"]
        r["ratio_to_forward"] = r["total_us"] / fwd
        r["cpu_ratio_to_forward"] = r["total_cpu_us"] / fwd_cpu
        print(f"{r['format']:38s} {r['decode_us']:8.0f} {r['preprocess_us']:11.0f} "
              f"{r['total_us']:8.0f} {r['ratio_to_forward']:6.2f} | {r['total_cpu_us']:10.0f} "
              f"{r['cpu_ratio_to_forward']:6.2f}")
    print("# µs per spectrum (wall unless marked CPU), medians; ratio = preprocessing total / "
          "forward pass per spectrum; goal ≤ 0.5")
    for k, v in refs.items():
        print(f"# reference (CPU): {k}: {v:.0f} µs")
    if args.json:
        args.json.write_text(json.dumps({"forward_us": fwd, "forward_cpu_us": fwd_cpu,
                                         "forward": what, "rows": rows,
                                         "references_cpu_us": refs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
