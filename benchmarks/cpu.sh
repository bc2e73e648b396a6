#!/usr/bin/env bash
# The CPU table of docs/benchmarks.md, on a 2-core machine: LLaVA shapes with a CLIP-B/14-336 tower
# (576 visual tokens) and a ~110M-parameter 12-layer Llama decoder, random weights, fp32, 2 threads,
# a 616-token prompt and 32 new tokens; topv at keep all and keep 64 next to transformers' generate().
# Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
.venv/bin/topv-bench --model-shape cpu-bench --keep-sweep all,64 --prompt-tokens 616 --new-tokens 32 \
  --backend ort-cpu --quantize none,int8 --baseline hf --threads 2 --repeats 5 --warmup 2 \
  --json benchmarks/results/cpu.json --plot docs/img/bench-cpu.png "$@"
