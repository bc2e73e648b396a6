#!/usr/bin/env bash
# Retrains the bundled default model models/topv-shapes-vqa from scratch on this CPU (2 threads,
# about 85 minutes on an idle 2-core machine), in three stages with fixed seeds:
#   1. 7,000 steps with a scene curriculum (1-2 shapes for 2,500 steps, the full 3-6 by step 5,000);
#   2. 9,000 more steps on full scenes only, a fresh warm-up/cosine schedule (peak 5e-4), data seed 1;
#   3. 6,000 more steps like stage 2 at peak 3e-4, data seed 2.
# Then evaluates it on the val and test splits (no pruning) and writes its model card.
# Usage: scripts/train-bundled-model.sh [OUT_DIR]   (default: models/topv-shapes-vqa; refuses to overwrite)
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
$py -m topv.training.train_shapes --out "$work/stage1" --seed 0 --steps 7000 --curriculum-hold 2500 \
  --curriculum-steps 5000 --init-std 0.06 --position-init sincos --lr 1e-3 --warmup 200 --eval-every 1000 --threads 2
$py -m topv.training.train_shapes --out "$work/stage2" --init-from "$work/stage1" --seed 1 --steps 9000 \
  --curriculum-hold 0 --curriculum-steps 0 --init-std 0.06 --position-init sincos --lr 5e-4 --warmup 200 \
  --eval-every 1000 --threads 2
$py -m topv.training.train_shapes --out "$work/stage3" --init-from "$work/stage2" --seed 2 --steps 6000 \
  --curriculum-hold 0 --curriculum-steps 0 --init-std 0.06 --position-init sincos --lr 3e-4 --warmup 200 \
  --eval-every 1000 --threads 2
cp "$work/stage1/training.json" "$work/stage3/training-stage1.json"
cp "$work/stage2/training.json" "$work/stage3/training-stage2.json"
$py -m topv.training.evaluate_shapes --model "$work/stage3" --data data/shapes-vqa/val.jsonl --json "$work/eval-val.json"
$py -m topv.training.evaluate_shapes --model "$work/stage3" --data data/shapes-vqa/test.jsonl --json "$work/eval-test.json"
$py -m topv.training.model_card --model "$work/stage3" --eval val="$work/eval-val.json" --eval test="$work/eval-test.json"
mkdir -p "$(dirname "$out")"
mv "$work/stage3" "$out"
echo "saved $out"
