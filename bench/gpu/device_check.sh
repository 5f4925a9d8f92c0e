#!/usr/bin/env bash
# The CUDA path end to end, on a lent GPU machine, in one prepared command.
#
# Why a script and a bundle: that machine has CUDA 13, PyTorch (and the nvidia-* CUDA/cuDNN
# packages) and a CPU-only onnxruntime, reaches no package index, and each call carries at
# most 64 MiB. bench/gpu/make_bundle.sh packs onnxruntime-gpu (its CUDA provider
# xz-compressed) and the service's missing wheels into parts; each call moves one part to
# $PARTS; this script reassembles them, installs into /tmp/site and then, each step with its
# own time limit so one failure does not cost the others:
#   1. which providers ORT offers and which one a Specula runner really gets;
#   2. tests/service/api/test_api_cuda.py (CUDA vs CPU outputs, the service on CUDA);
#   3. bench/bench_batching.py (batcher + ORT, no HTTP) with and without per-shape sessions
#      under batch shapes that vary, then as the service's bench runs it;
#      bench/bench_service.py --device cuda;
#   4. the lightcone and saliency HTTP tests with the GPU as the default device;
#   5. bench/bench_service.py --device cpu on the same machine (16 CPUs), one-thread runs.
# Usage: each call carries one part (run's carry: [".gpu/partN"]) and copies it to /tmp/parts
# (`mkdir -p /tmp/parts && cp .gpu/partN /tmp/parts/`), the first one with .gpu/bundle.sha256,
# calls back to back (the machine goes back after 30 s idle); the last one then runs
#   PARTS=/tmp/parts bash bench/gpu/device_check.sh     (results under $OUT)
# CHECKS="tests ab batching bench_cuda bench_workers api bench_cpu" picks steps (default: all).
set -u
OUT=${OUT:-/tmp/device-out}
PARTS=${PARTS:-/tmp/parts}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
step() { echo; echo "=== $(date -u +%T) $*"; }
# CHECKS="tests ab" runs only those checks (a rerun on a warm machine); default all
want() { [[ " ${CHECKS:-all} " == *" all "* || " ${CHECKS:-} " == *" $1 "* ]]; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 --version; nproc

step "reassemble and install"
if [ ! -f "$SITE/.done" ]; then
  cat "$PARTS"/part? > /tmp/bundle.tar
  (cd /tmp && sha256sum bundle.tar) | diff - <(sed 's#  .*#  bundle.tar#' "$PARTS/bundle.sha256") \
    || { echo "bundle checksum differs"; exit 1; }
  rm -rf /tmp/bundle && mkdir -p /tmp/bundle && tar -xf /tmp/bundle.tar -C /tmp/bundle
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" /tmp/bundle/deps/*.whl || exit 1
  # Python's lzma, not tar -J / xz: the image need not have the xz tool
  python3 -c "import lzma, shutil, sys, tarfile
tarfile.open('/tmp/bundle/ort_rest.tar.xz', 'r:xz').extractall(sys.argv[1], filter='data')
with lzma.open('/tmp/bundle/cuda.so.xz') as src, open(sys.argv[2], 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 24)" "$SITE" \
    "$SITE/onnxruntime/capi/libonnxruntime_providers_cuda.so" || exit 1
  touch "$SITE/.done"
fi
# wheels found missing after the bundle was made travel beside it, in .gpu/extra
if compgen -G ".gpu/extra/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .gpu/extra/*.whl || exit 1
fi
export PYTHONPATH=$SITE
# the bench and the real-file tests read ../shared/data, which does not travel
mkdir -p ../shared/data/sdss && cp /tmp/bundle/spec-1198-52669-0063.fits ../shared/data/sdss/

step "providers"
probe() {
  python3 - <<'EOF'
import onnxruntime as ort
from service.inference.repository import ModelRepository
from service.inference.runner import OnnxRunner
print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
mv = ModelRepository("models").load("spectrum_classifier")
r = OnnxRunner(mv.onnx, device="cuda")
print("runner provider:", r.provider)
raise SystemExit(0 if r.provider == "CUDAExecutionProvider" else 1)
EOF
}
if ! probe; then
  # the fallback a deployment would use: the nvidia-* packages' lib folders on the path
  LD_LIBRARY_PATH=$(python3 -c "import glob, os, site
print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages()
      for p in glob.glob(d + '/nvidia/**/lib*.so*', recursive=True)})))")
  export LD_LIBRARY_PATH
  echo "preload_dlls was not enough; retrying with LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  probe || echo "CUDA EP did not initialise"
fi

if want tests; then
step "CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/service/api/test_api_cuda.py -rA \
  2>&1 | tee "$OUT/pytest_cuda.txt" | tail -25
fi

if want ab; then
step "batcher and ORT, no HTTP (bench/bench_batching.py): per-shape sessions on/off, alternated"
# --vary: batch shapes change from one batch to the next, as HTTP arrivals make them
for shape in on off on off; do
  timeout 60 python3 -m bench.bench_batching --device cuda --concurrency 8 --rows 32 --vary \
    --duration 3 --per-shape $shape 2>&1 | tee -a "$OUT/batching.txt"
done
fi
if want batching; then
step "batcher and ORT, no HTTP: single rows at c=32, and exposures"
timeout 60 python3 -m bench.bench_batching --device cuda --concurrency 32 --duration 3 \
  2>&1 | tee -a "$OUT/batching.txt"
timeout 60 python3 -m bench.bench_batching --device cuda --concurrency 2 --rows 2436 \
  --duration 3 2>&1 | tee -a "$OUT/batching.txt"
fi

if want bench_cuda; then
step "bench, CUDA"
timeout 180 python3 -m bench.bench_service --device cuda --duration ${DURATION:-3} \
  --raw-seconds 0.8 2>&1 | tee "$OUT/bench_cuda.txt"
fi

if want api; then
step "lightcone and saliency HTTP tests, GPU the default device"
timeout 90 python3 -m pytest -q -p no:cacheprovider -n 4 tests/service/api/test_lightcones.py \
  tests/service/api/test_api_lightcone_saliency.py tests/service/api/test_api_saliency.py \
  2>&1 | tee "$OUT/pytest_api.txt" | tail -25
fi

if want bench_workers; then
step "bench, CUDA, ${WORKERS:-8} service worker processes (SPECULA_WORKERS)"
timeout 240 python3 -m bench.bench_service --device cuda --duration ${DURATION:-3} \
  --raw-seconds 0.5 --workers ${WORKERS:-8} --only "${ONLY:-}" 2>&1 | tee "$OUT/bench_workers.txt"
fi

if want bench_cpu; then
step "bench, CPU on the same machine, one-thread runs on every CPU"
timeout 150 python3 -m bench.bench_service --device cpu --duration ${DURATION:-3} \
  --raw-seconds 0.8 --intra-op-threads 1 2>&1 | tee "$OUT/bench_cpu.txt"
fi
step "done"
