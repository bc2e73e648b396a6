"""Write the model card (README.md) of a trained shapes-VQA checkpoint from its measured numbers.

    python -m tools.training.model_card --model models/topv-shapes-vqa \\
        --eval val=/tmp/eval-val.json --eval test=/tmp/eval-test.json [--eval "test keep 16 random"=/tmp/x.json]

Reads ``training.json`` (written by train_shapes) and the ``--json`` outputs of evaluate_shapes; every
number in the card comes from those files. Also writes ``evaluation.json`` (the accuracies, without
per-question predictions) next to the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tools.data.shapes import QUESTION_TYPES


def _arch(config: dict[str, Any]) -> list[str]:
    v, t = config["vision_config"], config["text_config"]
    grid = v["image_size"] // v["patch_size"]
    return [
        f"- Vision tower: CLIP ViT (`CLIPVisionModel`), {v['image_size']} px input, patch {v['patch_size']} "
        f"({grid}x{grid} = {grid * grid} patch tokens + CLS), {v['num_hidden_layers']} layers, hidden {v['hidden_size']}, "
        f"MLP {v['intermediate_size']}, {v['num_attention_heads']} heads. Features: layer {config['vision_feature_layer']} "
        f"(the last), strategy `{config['vision_feature_select_strategy']}` (CLS dropped) -> **{grid * grid} visual tokens**.",
        f"- Projector: LLaVA's 2-layer MLP ({v['hidden_size']} -> {t['hidden_size']} -> {t['hidden_size']}, GELU).",
        f"- Decoder: Llama (`LlamaForCausalLM` layers), {t['num_hidden_layers']} layers, hidden {t['hidden_size']}, "
        f"MLP {t['intermediate_size']}, {t['num_attention_heads']} heads ({t['num_key_value_heads']} KV heads), "
        f"RoPE theta {t.get('rope_theta', t.get('rope_parameters', {}).get('rope_theta'))}, vocabulary {t['vocab_size']} words, untied LM head.",
    ]


def _acc_table(evals: dict[str, dict[str, Any]]) -> list[str]:
    names = list(evals)
    lines = ["| question type | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for qtype in QUESTION_TYPES:
        cells = []
        for n in names:
            pt = evals[n]["per_type"].get(qtype)
            cells.append(f"{pt['accuracy'] * 100:.1f}% (n={pt['count']})" if pt else "-")
        lines.append(f"| {qtype} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{evals[n]['accuracy'] * 100:.1f}%** (n={evals[n]['count']})" for n in names) + " |")
    return lines


_POSITION_INIT = {
    "sincos": "2-D sine-cosine codes of the patch row and column",
    "layout": "a one-hot code of the patch's 3x3 layout cell (row, column) plus 2-D sine-cosine codes",
    "random": "CLIP's random init",
}


def training_stages(model_dir: Path) -> list[dict[str, Any]]:
    """The ``training.json`` of every stage, oldest first: ``training-stage1.json``, ``-stage2.json``, ...
    (earlier runs that the last one continued with ``--init-from``), then ``training.json``."""
    earlier = sorted(model_dir.glob("training-stage*.json"), key=lambda p: int(p.stem.rsplit("stage", 1)[1]))
    return [json.loads(p.read_text()) for p in earlier] + [json.loads((model_dir / "training.json").read_text())]


def _training_lines(model_dir: Path, config: dict[str, Any]) -> list[str]:
    stages = training_stages(model_dir)
    minutes = sum(t["train_minutes"] for t in stages)
    examples = sum(t["examples_seen"] for t in stages)
    last = stages[-1]
    lines = [
        f"Reproduced by one command ({len(stages)} {'stage' if len(stages) == 1 else 'stages'}, fixed seeds; "
        f"{minutes:.1f} minutes of training on {last['threads']} threads of a 2-core x86-64 VM, torch {last['torch']}, transformers {last['transformers']};",
        "then the evaluations and this card):",
        "",
        "    bash scripts/train-bundled-model.sh models/topv-shapes-vqa",
        "",
    ]
    for i, t in enumerate(stages, start=1):
        a = t["args"]
        vals = [h for h in t["history"] if "val_acc" in h]
        name = "training.json" if i == len(stages) else f"training-stage{i}.json"
        start = "from scratch" if not a.get("init_from") else "from the previous stage's weights"
        lines += [
            f"Stage {i} (`{name}`): {a['steps']:,} steps {start}, data seed {a['seed']}, batch {a['batch_size']} "
            f"({a['questions_per_image']} questions per scene), peak LR {a['lr']}, {t['train_minutes']:.1f} minutes"
            + (f", auxiliary dense loss weight {a['aux_weight']}" if a.get("aux_weight") else "")
            + (f", scene curriculum to step {a['curriculum_steps']}" if a.get("curriculum_steps") else "") + ".",
            "",
            "```",
            t["command"],
            "```",
            "",
        ]
        if vals:
            lines += [f"Validation first-token accuracy during stage {i} (first {a['eval_samples']} val questions): "
                      + ", ".join(f"{h['step']}: {h['val_acc'] * 100:.0f}%" for h in vals) + ".", ""]
    a = last["args"]
    losses = [h for h in last["history"] if "loss" in h]
    init_std = a["init_std"] if a.get("init_std") is not None else config["text_config"]["initializer_range"]
    lines += [
        f"- {examples:,} question/answer examples in all, generated on the fly from each stage's seed (stream",
        "  `train/<seed>`, disjoint from the val/test streams). Nothing is pruned during training.",
        f"- AdamW (betas 0.9/0.98, weight decay {a['weight_decay']}), linear warm-up "
        f"({' / '.join(str(t['args']['warmup']) for t in stages)} steps) then cosine decay to "
        f"{a['min_lr_ratio']}x, gradient clipping {a['grad_clip']}; initializer std {init_std}; vision position embeddings",
        f"  initialized with {_POSITION_INIT.get(stages[0]['args']['position_init'], stages[0]['args']['position_init'])}.",
        "- Loss: cross-entropy on the answer token and `</s>` only; the prompt is exactly the chat template's output.",
    ]
    if a.get("aux_weight"):
        lines += [
            f"- Plus an auxiliary dense loss (weight {a['aux_weight']}): a linear head on the projector output predicts each",
            "  patch's own colour, shape, size (or background) and layout cell (`tools.data.shapes.patch_labels`). It teaches",
            "  the visual tokens what their own patch shows in a few hundred steps instead of thousands; the labels are",
            "  per patch, so it does not spread an object's identity over other tokens. The head is discarded: the",
            "  checkpoint is a plain LLaVA.",
        ]
    if losses:
        lines.append(f"- Final training loss {losses[-1]['loss']:.4f} (mean over the last {a['log_every']} steps).")
    return lines


def write_card(model_dir: str | Path, evals: dict[str, dict[str, Any]]) -> Path:
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    training = json.loads((model_dir / "training.json").read_text())
    size_mb = (model_dir / "model.safetensors").stat().st_size / 1e6
    lines = [
        "# topv-shapes-vqa",
        "",
        "The project's bundled vision-language model: a small LLaVA (`LlavaForConditionalGeneration`) trained from",
        "scratch, on the CPU, by `tools.training.train_shapes` on the synthetic shapes VQA task of `tools.data`",
        "(scenes of coloured shapes on a 3x3 layout grid; questions about what is where, relations, counts and existence;",
        "see `data/shapes-vqa/README.md`). It exists so that visual-token pruning can be measured on a real, trained model",
        "whose answers depend on where things are in the image. It is a toy: it knows only this task's 54-word vocabulary.",
        "",
        "Load it like any Hugging Face checkpoint:",
        "",
        "```python",
        "from PIL import Image",
        "from transformers import AutoProcessor, LlavaForConditionalGeneration",
        "",
        'model = LlavaForConditionalGeneration.from_pretrained("models/topv-shapes-vqa")',
        'processor = AutoProcessor.from_pretrained("models/topv-shapes-vqa")',
        'conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color is the shape in the top left ?"}]}]',
        "prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)  # USER: <image> ... ASSISTANT:",
        'inputs = processor(images=Image.open("data/shapes-vqa/images/test-00000.png").convert("RGB"), text=prompt, return_tensors="pt")',
        "out = model.generate(**inputs, max_new_tokens=4)",
        'print(processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "## Architecture",
        "",
        *_arch(config),
        f"- Parameters: {training['parameters']:,} ({size_mb:.1f} MB fp32 safetensors).",
        "- Tokenizer: whitespace word-level (`topv.testing.llava.build_tokenizer`), specials `<pad> <s> </s> <unk> <image>`;",
        '  chat template "USER: <image> {question} ASSISTANT:"; answers are one word followed by `</s>`.',
        "- Image processor: CLIP-style (resize shortest edge + centre crop to the input size, CLIP mean/std).",
        "",
        "## Training",
        "",
        *_training_lines(model_dir, config),
    ]
    lines += [
        "",
        "## Accuracy",
        "",
        "Greedy `model.generate(..., max_new_tokens=4)`, scored with `topv.evaluation.answers.answers_match`:",
        "",
        "```",
        "python -m tools.training.evaluate_shapes --model models/topv-shapes-vqa --data data/shapes-vqa/test.jsonl",
        "```",
        "",
        *_acc_table(evals),
        "",
        "Columns with `keep N` used the PyTorch reference pipeline (`topv.reference.generate`): layers 0-2 see all",
        "144 visual tokens, layers 3+ only the N kept ones (`--keep N --layer 2 --method M`).",
        "",
        "## Limitations",
        "",
        "Synthetic, closed-vocabulary task; the model cannot answer anything else. Unknown words map to `<unk>`.",
    ]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    summary = {n: {k: v for k, v in e.items() if k != "predictions"} for n, e in evals.items()}
    (model_dir / "evaluation.json").write_text(json.dumps(summary, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.training.model_card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--eval", action="append", required=True, metavar="NAME=JSON", help="an evaluate_shapes --json output")
    args = p.parse_args(argv)
    evals = {}
    for item in args.eval:
        name, path = item.split("=", 1)
        evals[name] = json.loads(Path(path).read_text())
    print(write_card(args.model, evals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
