"""Write the model card (README.md) of a trained shapes-VQA checkpoint from its measured numbers.

    python -m topv.training.model_card --model models/topv-shapes-vqa \\
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

from topv.data.shapes import QUESTION_TYPES


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


def write_card(model_dir: str | Path, evals: dict[str, dict[str, Any]]) -> Path:
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    training = json.loads((model_dir / "training.json").read_text())
    size_mb = (model_dir / "model.safetensors").stat().st_size / 1e6
    args = training["args"]
    vals = [h for h in training["history"] if "val_acc" in h]
    losses = [h for h in training["history"] if "loss" in h]
    lines = [
        "# topv-shapes-vqa",
        "",
        "The project's bundled vision-language model: a small LLaVA (`LlavaForConditionalGeneration`) trained from",
        "scratch, on the CPU, by `topv.training.train_shapes` on the synthetic shapes VQA task of `topv.data`",
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
        "- Tokenizer: whitespace word-level (`topv.models.factory.build_tokenizer`), specials `<pad> <s> </s> <unk> <image>`;",
        '  chat template "USER: <image> {question} ASSISTANT:"; answers are one word followed by `</s>`.',
        "- Image processor: CLIP-style (resize shortest edge + centre crop to the input size, CLIP mean/std).",
        "",
        "## Training",
        "",
        "```",
        training["command"],
        "```",
        "",
        f"- Seed {args['seed']}; {args['steps']} steps of batch {args['batch_size']} ({training['examples_seen']:,} question/answer",
        f"  examples, {args['questions_per_image']} questions per generated scene), all generated on the fly from the seed",
        "  (stream `train/<seed>`, disjoint from the val/test streams). Nothing pruned during training.",
        f"- AdamW (betas 0.9/0.98, weight decay {args['weight_decay']}), peak LR {args['lr']}, {args['warmup']} warm-up steps,",
        f"  cosine decay to {args['min_lr_ratio']}x, gradient clipping {args['grad_clip']}; initializer std "
        f"{args['init_std'] if args.get('init_std') is not None else config['text_config']['initializer_range']}; vision position",
        f"  embeddings initialized with 2-D sine-cosine codes ({args['position_init']}); scene-size curriculum over the first",
        f"  {args['curriculum_steps']} steps (1-2 shapes growing to the full 3-6).",
        "- Loss: cross-entropy on the answer token and `</s>` only; the prompt is exactly the chat template's output.",
        f"- Wall time: **{training['train_minutes']:.1f} minutes** of training on {training['threads']} CPU thread(s) of a 2-core",
        f"  x86-64 VM shared with other jobs (torch {training['torch']}, transformers {training['transformers']}).",
    ]
    if losses:
        lines.append(f"- Final training loss {losses[-1]['loss']:.4f} (mean over the last {args['log_every']} steps).")
    if vals:
        lines.append(f"- Validation first-token accuracy during training (first {args['eval_samples']} val questions): "
                     + ", ".join(f"{h['step']}: {h['val_acc'] * 100:.0f}%" for h in vals) + ".")
    lines += [
        "",
        "## Accuracy",
        "",
        "Greedy `model.generate(..., max_new_tokens=4)`, scored with `topv.data.answers.answers_match`:",
        "",
        "```",
        "python -m topv.training.evaluate_shapes --model models/topv-shapes-vqa --data data/shapes-vqa/test.jsonl",
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
    p = argparse.ArgumentParser(prog="python -m topv.training.model_card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
