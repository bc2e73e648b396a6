#!/usr/bin/env bash
# Packs onnxruntime-gpu (CUDA 13, Python 3.12: the GPU machine's) into parts that each fit one device call with
# the working tree: a call sends the tracked and untracked-not-ignored files plus what it carries, 64 MiB in all
# (/work/.library/device/README.md), and this repository's tree alone is ~24 MiB (the bundled models), so the
# 60 MiB parts of ../shared/gpu/prepare-gpu-wheels.sh cannot travel. Parts go to .gpuwheels/1/part .. N/part
# (ignored through .git/info/exclude); docs/gpu.md says how the calls carry them. Pillow, matplotlib and psutil
# are already on the GPU machine (KINDS.md, read 2026-11-17); the run's preflight checks Pillow (the image
# processors need it), a profile without matplotlib has no plot, and memory falls back to /proc without psutil.
#   bash benchmarks/gpu_wheels.sh                 # prints the plan: N calls, part size
#   GPU_WHEELS_DIR=... GPU_WHEELS_PYTHON=3.11 ...  # elsewhere, for another Python (the rehearsal: gpu_rehearse.sh)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.gpuwheels/' "$exclude" 2>/dev/null || echo '/.gpuwheels/' >>"$exclude"
out=${GPU_WHEELS_DIR:-.gpuwheels}
if [ -e "$out" ] && find "$out" -mindepth 1 -maxdepth 1 ! -name '[0-9]*' | grep -q .; then
  echo "error: $out holds more than wheel parts (N/part); not replacing it" >&2
  exit 2
fi
rm -rf "$out"
part=$(python3 benchmarks/gpu_parts.py --part-bytes)
dl=$(mktemp -d)
trap 'rm -rf "$dl"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_WHEELS_PYTHON:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dl" "onnxruntime-gpu==${ORT_GPU_VERSION:-1.31.1}" "$@" 2>&1 | grep -v '^WARNING: Location' || true
ls "$dl"/*.whl >/dev/null
mkdir -p "$out"
(cd "$dl" && tar cf - ./*.whl) | split -b "$part" -d -a 2 - "$out/part."
n=0
for p in $(ls "$out"/part.* | sort); do
  n=$((n + 1))
  mkdir -p "$out/$n"
  mv "$p" "$out/$n/part"
done
python3 benchmarks/gpu_parts.py --plan "$n"
