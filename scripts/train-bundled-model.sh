#!/usr/bin/env bash
# Retrains the bundled default model models/topv-shapes-vqa from scratch on this CPU (2 threads,
# about 55 minutes on an idle 2-core machine), in two stages with fixed seeds:
#   1. 2,000 steps from scratch (8 scenes x 16 questions per step), peak LR 1e-3, with the auxiliary
#      dense per-patch loss (--aux-weight: each visual token is taught what its own patch shows);
#   2. 6,500 more steps from stage 1's weights, data seed 1 (other scenes), a fresh warm-up/cosine
#      schedule at peak 8e-4, same losses.
# Then evaluates it on the val and test splits (no pruning) and writes its model card.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup-venv.sh"
cd "$root"
out=${1:-models/topv-shapes-vqa}
if [ -e "$out" ]; then echo "error: $out exists; remove it or pass another folder" >&2; exit 2; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
py=.venv/bin/python
common=(--batch-size 128 --questions-per-image 16 --aux-weight 1.0 --curriculum-hold 0 --curriculum-steps 0
        --init-std 0.06 --position-init layout --log-every 50 --threads 2)
$py -m tools.training.train_shapes --out "$work/stage1" --seed 0 --steps 2000 --lr 1e-3 --warmup 100 --eval-every 250 "${common[@]}"
$py -m tools.training.train_shapes --out "$work/stage2" --init-from "$work/stage1" --seed 1 --steps 6500 --lr 8e-4 \
  --warmup 200 --eval-every 500 "${common[@]}"
cp "$work/stage1/training.json" "$work/stage2/training-stage1.json"
$py -m tools.training.evaluate_shapes --model "$work/stage2" --data data/shapes-vqa/val.jsonl --json "$work/eval-val.json"
$py -m tools.training.evaluate_shapes --model "$work/stage2" --data data/shapes-vqa/test.jsonl --json "$work/eval-test.json"
$py -m tools.training.model_card --model "$work/stage2" --eval val="$work/eval-val.json" --eval test="$work/eval-test.json"
mkdir -p "$(dirname "$out")"
mv "$work/stage2" "$out"
echo "saved $out"
