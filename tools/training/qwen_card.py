"""Write the model card (README.md) of the Qwen2.5-VL-architecture shapes-VQA model from its measured numbers.

    python -m tools.training.qwen_card --model models/topv-shapes-qwen --eval val=eval-val.json --eval test=eval-test.json

Reads ``training.json`` (written by train_qwen_shapes) and the ``topv-eval --methods none --json`` results;
every number in the card comes from those files. Also writes ``evaluation.json`` next to the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _unpruned(result: dict[str, Any]) -> dict[str, Any]:
    row = next(r for r in result["results"] if r["method"] == "none")
    return {"accuracy": row["accuracy"], "n": row["n"], "by_type": row.get("by_type", {})}


def card(model_dir: Path, evals: dict[str, dict[str, Any]]) -> str:
    training = json.loads((model_dir / "training.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    t, v = config["text_config"], config["vision_config"]
    types = sorted({k for e in evals.values() for k in e["by_type"]})
    table = ["| question type | " + " | ".join(evals) + " |", "|---|" + "---|" * len(evals)]
    table += [f"| {q} | " + " | ".join(f"{e['by_type'].get(q, 0) * 100:.1f}%" for e in evals.values()) + " |" for q in types]
    table.append("| **all** | " + " | ".join(f"**{e['accuracy'] * 100:.1f}%** (n={e['n']})" for e in evals.values()) + " |")
    last_val = [h for h in training["history"] if "val_acc" in h]
    return "\n".join([
        "# topv-shapes-qwen: a Qwen2.5-VL-architecture model trained on shapes-VQA",
        "",
        "A `Qwen2_5_VLForConditionalGeneration` trained from scratch on the CPU on the synthetic shapes-VQA task of "
        "`tools/data` by `tools/training/train_qwen_shapes.py` (one command: `scripts/train-qwen-model.sh`). It exists to "
        "measure TopV on the Qwen2-VL family; its weights are not a general model.",
        "",
        "## Architecture",
        f"- Vision: Qwen2.5-VL ViT, {v['depth']} blocks (full attention in blocks {v['fullatt_block_indexes']}, window "
        f"attention of {v['window_size']} px elsewhere), width {v['hidden_size']}, 14-px patches, 2x2 merger -> "
        f"{v['out_hidden_size']}. Inputs are resized to 336 x 336 (min_pixels = max_pixels), so **144 visual tokens** "
        "(12 x 12), one per 16-px slot of the 192-px scenes.",
        f"- Decoder: Qwen2 with M-RoPE (sections {t['rope_parameters']['mrope_section']}), {t['num_hidden_layers']} layers, "
        f"hidden {t['hidden_size']}, {t['num_attention_heads']} heads ({t['num_key_value_heads']} KV heads), vocabulary "
        f"{t['vocab_size']} words plus Qwen's special tokens, chat format `<|im_start|>user ... <|im_end|>`.",
        f"- {training['parameters'] / 1e6:.2f}M parameters.",
        "",
        "## Training",
        f"- `{training['command']}`",
        f"- {training['steps']} steps in {training['train_minutes']:.1f} min on {training['args']['threads']} CPU threads "
        f"(torch {training['torch']}, transformers {training['transformers']}); 8 scenes x 16 questions per step, the "
        "scene's questions packed behind one vision pass; answer loss + the dense per-slot auxiliary loss "
        f"(weight {training['args']['aux_weight']}), whose head is not saved.",
        f"- Val first-token accuracy during training (160 questions): "
        + ", ".join(f"step {h['step']}: {h['val_acc']:.3f}" for h in last_val) + ".",
        "",
        "## Accuracy without pruning (`topv-eval --methods none`, greedy, 8 new tokens)",
        *table,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--eval", action="append", default=[], metavar="NAME=FILE")
    args = p.parse_args(argv)
    model_dir = Path(args.model)
    evals = {name: _unpruned(json.loads(Path(path).read_text())) for name, path in (e.split("=", 1) for e in args.eval)}
    (model_dir / "README.md").write_text(card(model_dir, evals))
    (model_dir / "evaluation.json").write_text(json.dumps(evals, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
