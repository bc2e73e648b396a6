#!/usr/bin/env bash
# The peer benchmark of docs/benchmarks.md: topv (ort-cpu and openvino backends, keep all and keep 64, float32,
# bf16 and int8) against OpenVINO GenAI's VLMPipeline (no pruning; f32, its defaults, int8 weights) on the same
# LLaVA checkpoint (the cpu-bench shape: CLIP-B/14-336 + a 12-layer 768-wide Llama, random weights, a byte-level
# BPE tokenizer), the same image and the same 616-token prompt, 32 new tokens, 2 threads each. Every
# configuration runs in its own process (so peak RSS is its own), the configurations interleaved over ROUNDS
# rounds; then the pruning-off f32 tokens of both engines are compared, and summarize.py writes the JSON and
# the Markdown table and checks the targets.
#   bash benchmarks/peers/run.sh [ROUNDS] [RUNS]      (default 3 rounds of 1 warm-up + 5 measured generations;
#                                                      ROUNDS=0 only prepares the venvs, checkpoint, IRs and exports)
# Work folder: $TOPV_PEERS_WORK (default artifacts/peers): two virtualenvs (GenAI + optimum-intel, which pins
# transformers < 5.6; topv's runtime without torch), the checkpoint, the IRs and the exports. Every step is
# skipped when its output exists, so a second run only measures. Run it on an otherwise idle machine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rounds=${1:-3}
runs=${2:-5}
work=$(realpath -m "${TOPV_PEERS_WORK:-artifacts/peers}")
here=benchmarks/peers
mkdir -p "$work"
export OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error
log() { echo "[peers $(date +%H:%M:%S)] $*" >&2; }

bash scripts/setup-venv.sh
# Each step writes into a temporary name and renames it (or stamps its venv) when complete, so an interrupted
# run is redone from that step.
genai=$work/venv-genai
if [ ! -f "$genai/.done" ]; then
  log "creating $genai (optimum-intel, OpenVINO GenAI)"
  rm -rf "$genai"
  python3 -m venv "$genai"
  "$genai/bin/pip" install -q --upgrade pip
  # torch: this machine's pip finds the CPU build of 2.13.0 locally; elsewhere add PyTorch's CPU index.
  "$genai/bin/pip" install -q "torch==2.13.0" "optimum-intel[openvino]==2.2.0" "openvino==2026.4.1" \
    "openvino-tokenizers==2026.4.1.0" "openvino-genai==2026.4.1.0" "nncf==3.4.0" pillow psutil
  # optimum-intel depends on torchvision; the index's build needs a CUDA torch and fails to import on the CPU
  # build ("operator torchvision::nms does not exist"); nothing on the LLaVA export path needs it.
  "$genai/bin/pip" uninstall -q -y torchvision
  touch "$genai/.done"
fi
rt=$work/venv-topv
if [ ! -f "$rt/.done" ]; then
  log "creating $rt (topv's runtime with the openvino backend, without torch, as deployed)"
  rm -rf "$rt"
  python3 -m venv "$rt"
  "$rt/bin/pip" install -q --upgrade pip
  "$rt/bin/pip" install -q -c requirements/cpu.txt "$root[runtime,openvino]" psutil
  touch "$rt/.done"
fi
"$rt/bin/pip" install -q --no-deps --force-reinstall "$root"  # this checkout's topv, not the one the venv was made with

# Two checkpoints of the same shape: "bench" (the shape's 0.02 init) for every timing, and "agree" (0.1 init) for
# the pruning-off token agreement: at 0.02 the greedy output is one token repeated, which agrees trivially, and at
# 0.1 the int8 export's own check refuses the drift (cosine 0.985 < 0.99). Speed does not depend on the weights.
checkpoint() {  # NAME INIT: build, check under transformers 5.5, export the OpenVINO IR
  local ckpt=$work/$1 ir=$work/$1-ir-fp32
  if [ ! -f "$ckpt/weights-digest.json" ]; then
    log "building checkpoint $1 (init $2)"
    rm -rf "$ckpt" "$ckpt.tmp"
    .venv/bin/python $here/build_checkpoint.py "$ckpt.tmp" "$2"
    mv "$ckpt.tmp" "$ckpt"
  fi
  "$genai/bin/python" $here/check_checkpoint.py "$ckpt"
  if [ ! -f "$ir/preprocessor_config.json" ]; then
    log "optimum-cli export openvino $1 (fp32)"
    rm -rf "$ir" "$ir.tmp"
    "$genai/bin/optimum-cli" export openvino --model "$ckpt" --task image-text-to-text --weight-format fp32 "$ir.tmp" >/dev/null
    cp "$ckpt/preprocessor_config.json" "$ir.tmp/"  # optimum copies processor_config.json only
    mv "$ir.tmp" "$ir"
  fi
}
topv_export() {  # NAME OUT KEEP [QUANTIZE]
  local out=$work/$2
  if [ ! -f "$out/manifest.json" ]; then
    log "topv-export $1 --keep $3 ${4:+--quantize $4}"
    .venv/bin/topv-export "$work/$1" "$out" --keep "$3" ${4:+--quantize "$4"} --max-new-tokens 32 --threads 2 -q
  fi
}
checkpoint bench 0.02
checkpoint agree 0.1
if [ ! -d "$work/bench-ir-int8" ]; then
  log "NNCF int8 weights of the IR"
  rm -rf "$work/bench-ir-int8.tmp"
  "$genai/bin/python" $here/compress_ir.py "$work/bench-ir-fp32" "$work/bench-ir-int8.tmp"
  mv "$work/bench-ir-int8.tmp" "$work/bench-ir-int8"
fi
topv_export bench topv-all all
topv_export bench topv-64 64
topv_export bench topv-64-int8 64 int8
topv_export agree agree-topv-all all

if [ "$rounds" = 0 ]; then log "prepared $work (ROUNDS=0: nothing measured)"; exit 0; fi
results=$work/bench.jsonl
: >"$results"
G=("$genai/bin/python" $here/run_genai.py --work "$work" --threads 2 --runs "$runs")
T=("$rt/bin/python" $here/run_topv.py --work "$work" --threads 2 --runs "$runs")
configs=(
  "G $work/bench-ir-fp32 --precision f32"
  "G $work/bench-ir-fp32 --precision default"
  "G $work/bench-ir-int8 --precision default"
  "T $work/topv-all --backend ort-cpu"
  "T $work/topv-all --backend ort-cpu --low-memory"
  "T $work/topv-64 --backend ort-cpu"
  "T $work/topv-64-int8 --backend ort-cpu"
  "T $work/topv-64-int8 --backend ort-cpu --low-memory"
  "T $work/topv-all --backend openvino"
  "T $work/topv-all --backend openvino --precision auto"
  "T $work/topv-64 --backend openvino"
  "T $work/topv-64 --backend openvino --precision auto"
  "T $work/topv-64 --backend openvino --precision auto --weights int8"
)
"${T[@]}" "$work/topv-64" --backend openvino --weights int8 --runs 0 >/dev/null  # NNCF once: int8 weights cached
for round in $(seq "$rounds"); do
  for config in "${configs[@]}"; do
    read -r -a args <<<"$config"
    kind=${args[0]}; args=("${args[@]:1}")
    log "round $round/$rounds: $kind ${args[*]}"
    if [ "$kind" = G ]; then cmd=("${G[@]}"); else cmd=("${T[@]}"); fi
    "${cmd[@]}" "${args[@]}" | tail -1 | sed "s/^{/{\"round\": $round, /" >>"$results"
  done
done
log "token agreement, pruning off, float32"
"${G[@]}" "$work/agree-ir-fp32" --precision f32 --runs 0 | tail -1 >"$work/agree-genai.json"
"${T[@]}" "$work/agree-topv-all" --backend ort-cpu --runs 0 --logprob | tail -1 >"$work/agree-ort.json"
"${T[@]}" "$work/agree-topv-all" --backend openvino --runs 0 --logprob | tail -1 >"$work/agree-ov.json"
.venv/bin/python $here/summarize.py "$results" --agreement "$work"/agree-{genai,ort,ov}.json \
  --json benchmarks/results/peers-cpu.json --markdown "$work/table.md" --plot docs/img/bench-peers-cpu.png
