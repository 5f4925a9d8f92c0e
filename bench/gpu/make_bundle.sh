#!/usr/bin/env bash
# Pack what bench/gpu/device_check.sh installs on a lent GPU machine into equal parts under
# .gpu/ (ignored by git; each device call carries one part).
#
# That machine (Python 3.12, CUDA 13, PyTorch with the nvidia-* libraries) has no package
# index and takes at most 64 MiB a call with the working tree (~15 MB) included, while the
# onnxruntime-gpu wheel alone is ~255 MB. Its CUDA provider (284 MB) is xz-compressed
# (-9e: 185 MB; the wheel's deflate gets ~210), the rest of the wheel goes as a tar.xz, and
# the service's runtime wheels that image lacks travel beside them, with the SDSS file the
# bench reads (../shared does not travel).
# The parts must fit beside the working tree (tracked and untracked files travel too): with
# the tree at ~27 MB, six parts of ~36 MB. Check `git ls-files | xargs du -cb | tail -1`.
# Usage: bash bench/gpu/make_bundle.sh [parts=6]     (needs pip with network, xz, ~1 GB /tmp)
set -euo pipefail
PARTS=${1:-6}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-/tmp/specula-gpu-bundle}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_34_x86_64)
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$1" "${@:2}"
}
rm -rf "$WORK" && mkdir -p "$WORK/bundle/deps" "$WORK/x"
download "$WORK" "onnxruntime-gpu==1.31.1"
# versions as in the project's lock of the CPU machine; the GPU image has numpy, h5py,
# pyarrow, matplotlib, prometheus-client, httpx, anyio, uvloop, pytest and torch already
download "$WORK/bundle/deps" fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 \
  pydantic_core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 \
  typing-inspection==0.4.5 annotated-types==0.8.0 annotated-doc==0.0.7 uvicorn==0.54.0 \
  httptools==0.9.0 astropy==8.0.2 pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.2.0.34.55 \
  orjson==3.13.0 python-multipart==0.0.34 typing_extensions==4.16.0 \
  opentelemetry-api==1.45.2 importlib_metadata==10.2.0
(cd "$WORK/x" && unzip -q "$WORK"/onnxruntime_gpu-*.whl)
xz -T0 -9e -c "$WORK/x/onnxruntime/capi/libonnxruntime_providers_cuda.so" > "$WORK/bundle/cuda.so.xz"
tar -cf - -C "$WORK/x" --exclude=libonnxruntime_providers_cuda.so onnxruntime \
  onnxruntime_gpu-1.31.1.dist-info | xz -T0 -9 > "$WORK/bundle/ort_rest.tar.xz"
cp "$ROOT/../shared/data/sdss/spec-1198-52669-0063.fits" "$WORK/bundle/"
tar -cf "$WORK/bundle.tar" -C "$WORK/bundle" .
mkdir -p "$ROOT/.gpu" && rm -f "$ROOT"/.gpu/part?
split -n "$PARTS" -d -a 1 "$WORK/bundle.tar" "$ROOT/.gpu/part"
(cd "$WORK" && sha256sum bundle.tar) > "$ROOT/.gpu/bundle.sha256"
grep -qx '/.gpu/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >> "$ROOT/.git/info/exclude"
ls -l "$ROOT/.gpu"
