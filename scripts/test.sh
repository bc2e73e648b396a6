#!/usr/bin/env bash
# The test command: sets up .venv if needed, then runs the whole suite (CPU only, no downloads).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup-venv.sh"
cd "$root"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
