"""Saliency cost vs a forward pass, on ONNX Runtime CPU, in one run.

    .venv/bin/python -m bench.bench_saliency [--model-dir models/spectrum_classifier/1]
        [--threads 1] [--batches 1 64] [--rounds 30] [--torch]

Runs ``model.onnx`` (forward) and ``saliency.onnx`` (forward + input gradient) on the same
spectrum-like inputs, interleaved round by round so that load from other jobs on a shared
machine hits both alike, and prints per-spectrum times (min and median over rounds) and the
ratio saliency / forward per batch size. ``--torch`` adds the PyTorch reference (forward vs
forward + autograd.grad on the checkpoint the manifest names). The goal (issue 5) is a
ratio ≤ 3 on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from training.spectra.export_saliency import parity_inputs, target_matrix


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved(fns: dict, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=str(REPO / "models/spectrum_classifier/1"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--torch", action="store_true", help="also time PyTorch autograd")
    a = ap.parse_args(argv)
    d = Path(a.model_dir)
    manifest = json.loads((d / "manifest.json").read_text())
    if "saliency" not in manifest:
        print(f"{d}: no saliency entry; run `specula train saliency --model-dir {d}` first")
        return 2
    npix = int(manifest["inputs"][0]["shape"][-1])
    k = len(manifest["labels"])
    fwd = session(d / manifest["file"], a.threads)
    sal = session(d / manifest["saliency"]["file"], a.threads)
    print(f"model {manifest['name']} v{manifest['version']}  npix {npix}  labels {k}  "
          f"ORT intra-op threads {a.threads}  rounds {a.rounds} (interleaved)")
    print(f"{'batch':>5} {'forward ms/spec':>16} {'saliency ms/spec':>17} {'ratio(min)':>11} "
          f"{'ratio(median)':>14}")
    rows = []
    for n in a.batches:
        x = parity_inputs(npix, n, seed=n)
        t = target_matrix(k, [0] * n)
        fns = {"forward": lambda x=x: fwd.run(None, {"spectrum": x}),
               "saliency": lambda x=x, t=t: sal.run(None, {"spectrum": x, "target": t})}
        tm = interleaved(fns, max(3, a.rounds if n <= 8 else a.rounds // 4))
        mn = {key: min(v) / n * 1e3 for key, v in tm.items()}
        md = {key: float(np.median(v)) / n * 1e3 for key, v in tm.items()}
        ratio_min, ratio_med = mn["saliency"] / mn["forward"], md["saliency"] / md["forward"]
        rows.append((n, mn, ratio_min, ratio_med))
        print(f"{n:>5} {mn['forward']:>16.3f} {mn['saliency']:>17.3f} {ratio_min:>11.2f} "
              f"{ratio_med:>14.2f}")
    per_method = {"gradient": 1, "gradient_x_input": 1, "smoothgrad (n=5)": 5,
                  "integrated_gradients (m=32)": 32}
    n_ref, mn_ref, _, _ = rows[-1]
    print(f"\nper-spectrum cost of each method at batch {n_ref} (service: + one forward row "
          "for the prediction it explains):")
    for name, r in per_method.items():
        ms = r * mn_ref["saliency"] + mn_ref["forward"]
        print(f"  {name:<30} {r:>3} gradient rows  ≈ {ms:8.2f} ms  "
              f"({ms / mn_ref['forward']:.1f}x forward)")
    if a.torch:
        import torch

        from training.common.saliency import checkpoint_of
        from training.spectra.train import load_checkpoint

        torch.set_num_threads(a.threads)
        _, ens, _ = load_checkpoint(checkpoint_of(d))
        for n in a.batches:
            x = torch.from_numpy(parity_inputs(npix, n, seed=n))

            def fw(x=x):
                with torch.no_grad():
                    ens(x)

            def bw(x=x):
                xi = x.clone().requires_grad_(True)
                torch.autograd.grad(ens(xi)[0][:, 0].sum(), xi)

            tm = interleaved({"forward": fw, "grad": bw}, max(3, a.rounds // 4))
            print(f"torch batch {n:>3}: forward {min(tm['forward']) / n * 1e3:.3f} ms/spec, "
                  f"forward+autograd {min(tm['grad']) / n * 1e3:.3f} ms/spec, ratio "
                  f"{min(tm['grad']) / min(tm['forward']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
