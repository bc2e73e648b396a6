#!/usr/bin/env bash
# The main job: sets up .venv if needed, exports the bundled model with TopV pruning, answers a question
# about a bundled scene, and prints the answer, the timings and where the kept-token map was saved.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup-venv.sh"
cd "$root"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m tools.demo "$@"
