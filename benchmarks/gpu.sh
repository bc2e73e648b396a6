#!/usr/bin/env bash
# The GPU run (docs/gpu.md): ON the GPU machine, from the repository root, after the onnxruntime-gpu wheel parts
# (`bash benchmarks/gpu_wheels.sh`: parts sized so that each travels with the working tree) were copied to
# /tmp/gw/part.1 .. part.N by the preceding device calls. Installs the wheel into /tmp/site, prints the providers,
# then runs benchmarks/gpu_run.py: a preflight, correctness (tiny and llava-edge-1b, fp16: ort-cpu, torch, ort-cuda
# pairwise), the operator profile of the edge export, topv-bench at keep 64 with transformers eager and
# static+compiled, the CUDA graph, keep all, and llava-1.5-7b if the clock allows. Results go to
# $OUT/gpu-results.json as each tier (and each measured run) finishes, the whole log to $OUT/log.txt.
#   CPU dry run (in the test suite): bash benchmarks/gpu.sh --device cpu --dry-run [--dtype fp16]
#   the same with the GPU machine's library versions: bash benchmarks/gpu_rehearse.sh
set -euo pipefail
out=${OUT:-artifacts/gpu-results}  # (ignored by git: the device tool sets OUT)
mkdir -p "$out"
gw=${TOPV_GPU_WHEELS:-/tmp/gw} site=${TOPV_GPU_SITE:-/tmp/site}  # (the rehearsal points them elsewhere)
if [ -d "$gw" ] && [ ! -d "$site/onnxruntime" ]; then
  n=$(ls "$gw" | sed -n 's/^part\.\([0-9]*\)$/\1/p' | sort -n | tail -1); n=${n:-0}
  for k in $(seq 1 "$n"); do  # a machine that went cold between the calls lost the parts before it
    [ -f "$gw/part.$k" ] || { echo "wheel part $k of $n is missing in $gw: the machine was given back between calls; send them all again" >&2; exit 2; }
  done
  (cd "$gw" && cat $(ls part.* | sort -t. -k2 -n) | tar xf - && \
   ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --target "$site" ./*.whl) \
    || echo "installing the carried wheels failed; the preflight below says what is missing"
fi
export PYTHONPATH=$site:$(pwd):${PYTHONPATH:-} PATH=$site/bin:$PATH PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
$py -c "import torch, onnxruntime as o; getattr(o, 'preload_dlls', lambda: None)(); print('onnxruntime', o.__version__, o.get_available_providers())" \
  || true  # the preflight of gpu_run.py reports what is missing, with exit 2
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
set -o pipefail  # the whole log comes back as $OUT/log.txt (a reply shows only its last 12,000 characters)
$py benchmarks/gpu_run.py --out "$out" "$@" 2>&1 | grep --line-buffered -v "Loading weights\|Writing model shards" | tee "$out/log.txt"
