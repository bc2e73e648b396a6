#!/usr/bin/env bash
# The GPU table of docs/benchmarks.md (H100, LLaVA-1.5-7B shapes, fp16, batch 1). Runs ON the GPU
# machine, from the repository root, after onnxruntime-gpu has been brought there (docs/gpu.md):
#   the wheel parts joined under /tmp/gw and installed into /tmp/site.
# Writes $OUT/gpu.json and $OUT/gpu.png (or ./gpu-results/ when OUT is unset).
set -euo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
if [ -d /tmp/gw ] && [ ! -d /tmp/site/onnxruntime ]; then
  (cd /tmp/gw && cat $(ls part.* | sort -t. -k2 -n) | tar xf - && \
   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site ./*.whl)
fi
export PYTHONPATH=/tmp/site:$(pwd):${PYTHONPATH:-} PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
python3 -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m topv.profiling.cli --model-shape llava-1.5-7b --dtype fp16 --device cuda:0 \
  --backend ort-cuda,torch --keep-sweep all,64 --prompt-tokens 640 --new-tokens 32 \
  --baseline hf,hf-static --repeats 5 --warmup 2 --work-dir /tmp/topv-bench \
  --json "$out/gpu.json" --plot "$out/gpu.png" "$@"
