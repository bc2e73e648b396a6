#!/usr/bin/env bash
# Rehearses the GPU run on this CPU with the GPU machine's library versions (../shared/gpu/README.md: torch 2.11
# CUDA 13 build, transformers 5.17, onnx 1.23.1, onnxscript 0.7.2, onnxruntime 1.30; Pillow as carried with the
# wheel parts), in their own venv under artifacts/gpu-rehearsal, without topv installed (the GPU machine runs it
# from the repository root): the dry run in fp32 and fp16. It found that transformers' image processors need
# Pillow, which the GPU machine does not list. Downloads about 3 GB once (torch's CUDA libraries), so it is not
# part of CI; run it after changing what the GPU run touches, before a session with a GPU.
#   bash benchmarks/gpu_rehearse.sh            # results in artifacts/gpu-rehearsal/out-fp32, out-fp16
set -euo pipefail
cd "$(dirname "$0")/.."
venv=artifacts/gpu-rehearsal/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.11.0 transformers==5.17.0 onnx==1.23.1 onnxscript==0.7.2 onnxruntime==1.30.0 \
    pillow==13.0.0 numpy
fi
for dtype in fp32 fp16; do
  out=artifacts/gpu-rehearsal/out-$dtype
  rm -rf "$out"
  echo "== dry run, $dtype, with $("$venv/bin/python" -c 'import torch, transformers as t; print("torch", torch.__version__, "transformers", t.__version__)')"
  OUT=$out PYTHON=$venv/bin/python bash benchmarks/gpu.sh --device cpu --dry-run --dtype "$dtype" \
    --work artifacts/gpu-rehearsal/work 2>&1 | grep -v "Loading weights\|Writing model"
done
