#!/usr/bin/env bash
# The GPU run (docs/gpu.md): ON the GPU machine, from the repository root, after the wheel parts (onnxruntime-gpu,
# polygraphy and Pillow: `bash ../shared/gpu/prepare-gpu-wheels.sh pillow==13.0.0`) were copied to
# /tmp/gw/part.1 .. part.5 by the preceding device calls. Installs the wheels into /tmp/site, checks the CUDA
# provider, then runs benchmarks/gpu_run.py: a preflight, tier 1 correctness (tiny and llava-edge-1b, fp16, ort-cuda
# with and without CUDA graph vs ort-cpu and torch) and the operator profile of the edge export, tier 2 topv-bench
# on llava-edge-1b, tier 3 on llava-1.5-7b if the clock allows; every tier's JSON lands in $OUT as soon as it is
# done (tiers 2-3 also after each run); a table is printed last.
#   CPU dry run (in the test suite): bash benchmarks/gpu.sh --device cpu --dry-run [--dtype fp16]
#   the same with the GPU machine's library versions: bash benchmarks/gpu_rehearse.sh
set -euo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
gw=${TOPV_GPU_WHEELS:-/tmp/gw} site=${TOPV_GPU_SITE:-/tmp/site}  # (the rehearsal points them elsewhere)
if [ -d "$gw" ] && [ ! -d "$site/onnxruntime" ]; then
  (cd "$gw" && cat $(ls part.* | sort -t. -k2 -n) | tar xf - && \
   ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --target "$site" ./*.whl)
fi
export PYTHONPATH=$site:$(pwd):${PYTHONPATH:-} PATH=$site/bin:$PATH PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
$py -c "import torch, onnxruntime as o; getattr(o, 'preload_dlls', lambda: None)(); print('onnxruntime', o.__version__, o.get_available_providers())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$py -c "import json, topv.versions as v; print(json.dumps(v.library_versions()))" | tee "$out/versions.json"
exec $py benchmarks/gpu_run.py --out "$out" "$@"
