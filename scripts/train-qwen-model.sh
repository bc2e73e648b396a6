#!/usr/bin/env bash
# Trains the Qwen2.5-VL-architecture shapes-VQA model models/topv-shapes-qwen from scratch on this CPU (2 threads,
# fixed seed, one stage; see tools/training/train_qwen_shapes.py), then measures its unpruned accuracy on the val
# and test splits with topv-eval (greedy, 8 new tokens) and writes its model card.
#   scripts/train-qwen-model.sh [OUT_DIR]    (default models/topv-shapes-qwen; refuses an existing folder)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup-venv.sh"
cd "$root"
out=${1:-models/topv-shapes-qwen}
if [ -e "$out" ]; then echo "error: $out exists; remove it or pass another folder" >&2; exit 2; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
py=.venv/bin/python
$py -m tools.training.train_qwen_shapes --out "$work/model" --seed 0 --steps 4500 --minutes 58 --eval-every 500 --threads 2
for split in val test; do
  .venv/bin/topv-eval "$work/model" --data "data/shapes-vqa/$split.jsonl" --methods none --threads 2 \
    --json "$work/eval-$split.json"
done
$py -m tools.training.qwen_card --model "$work/model" --eval val="$work/eval-val.json" --eval test="$work/eval-test.json"
mkdir -p "$(dirname "$out")"
mv "$work/model" "$out"
echo "saved $out"
