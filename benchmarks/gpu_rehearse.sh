#!/usr/bin/env bash
# Rehearses the GPU run on this CPU with the GPU machine's library versions (../shared/gpu/README.md and
# /work/.library/device/KINDS.md: torch 2.11 CUDA 13 build, transformers 5.17, onnx 1.23.1, onnxscript 0.7.2,
# onnxruntime 1.30, Pillow, matplotlib; Python 3.11 here, 3.12 there), in their own venv under
# artifacts/gpu-rehearsal, without topv installed (the GPU machine runs it from the repository root). The wheel
# carried to the GPU machine (onnxruntime-gpu 1.31.1; here its cp311 build) goes the same way as there: parts packed
# by benchmarks/gpu_wheels.sh, copied one by one, joined and installed by benchmarks/gpu.sh into a --target folder.
# Then the dry run in fp32 and fp16 (onnxruntime-gpu's CPU provider; no GPU here). It found that onnxruntime-gpu
# must be preloaded after torch (docs/gpu.md).
# Downloads about 3.3 GB once, so it is not part of CI; run it after changing what the GPU run touches.
#   bash benchmarks/gpu_rehearse.sh            # results in artifacts/gpu-rehearsal/out-fp32, out-fp16
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)/artifacts/gpu-rehearsal
venv=$root/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.11.0 transformers==5.17.0 onnx==1.23.1 onnxscript==0.7.2 onnxruntime==1.30.0 numpy \
    pillow matplotlib
fi
if [ ! -d "$root/gw" ]; then  # the carried wheel packed by gpu_wheels.sh, each part copied as one device call does
  GPU_WHEELS_DIR=$root/parts GPU_WHEELS_PYTHON=3.11 bash benchmarks/gpu_wheels.sh >/dev/null
  mkdir -p "$root/gw.tmp"
  for k in $(ls "$root/parts"); do cp "$root/parts/$k/part" "$root/gw.tmp/part.$k"; done
  mv "$root/gw.tmp" "$root/gw"
fi
for dtype in fp32 fp16; do
  out=$root/out-$dtype
  rm -rf "$out"
  echo "== dry run, $dtype"
  TOPV_GPU_WHEELS=$root/gw TOPV_GPU_SITE=$root/site OUT=$out PYTHON=$venv/bin/python \
    bash benchmarks/gpu.sh --device cpu --dry-run --dtype "$dtype" --work "$root/work" 2>&1 | grep -v "Loading weights\|Writing model"
done
