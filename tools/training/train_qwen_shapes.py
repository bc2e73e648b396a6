"""Train a small Qwen2.5-VL-architecture model on shapes-VQA from scratch, on the CPU.

    python -m tools.training.train_qwen_shapes --out models/topv-shapes-qwen --seed 0 --steps 4000

The model is a genuine ``Qwen2_5_VLForConditionalGeneration`` (window-attention ViT over 14-px patches, 2x2
merger, Qwen2 decoder with M-RoPE), sized for the task: 336 x 336 inputs (the 192-px scenes upscaled), so the
12 x 12 merged tokens line up with the scenes' 16-px slots; 144 visual tokens, as the LLaVA model. Its
processor resizes every image to 336 x 336 (min_pixels = max_pixels), so transformers, the reference and
an export all see what training saw.

Each step renders ``--batch-size / --questions-per-image`` scenes, runs the vision tower once per scene,
and packs that scene's questions into one decoder row: the image prefix once, then each question and its
answer attending to the prefix and to themselves, at the M-RoPE positions they would have alone (the same
loss as one row per question, several times cheaper). The auxiliary dense loss of the LLaVA recipe
(``--aux-weight``) teaches each merged token what its own 16-px cell shows; its head is not saved.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tools.train_qwen")

IMAGE_HW = (336, 336)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.training.train_qwen_shapes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=128, help="questions per step")
    p.add_argument("--questions-per-image", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--aux-weight", type=float, default=1.0)
    p.add_argument("--init-std", type=float, default=0.06)
    p.add_argument("--init-from", default=None, metavar="DIR", help="continue from a saved checkpoint (fresh schedule)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time (wall clock)")
    p.add_argument("--val", default="data/shapes-vqa/val.jsonl")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-samples", type=int, default=160)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    return p


def build_model(seed: int, init_std: float) -> tuple[Any, Any]:
    """A seeded Qwen2.5-VL-architecture model for the task and its processor (word-level tokenizer)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from topv.families.qwen_processing import QwenImageConfig, QwenProcessor
    from tools.data.shapes import vocabulary

    tokenizer = _tokenizer(vocabulary())
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                            "<|vision_end|>", "<|im_end|>", "<|endoftext|>")}
    text = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=8, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-6, initializer_range=init_std,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
                tie_word_embeddings=False, bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1, 3], out_hidden_size=128,
                  initializer_range=init_std)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    pixels = IMAGE_HW[0] * IMAGE_HW[1]
    image_config = QwenImageConfig.from_dict({"min_pixels": pixels, "max_pixels": pixels, "patch_size": 14, "merge_size": 2,
                                              "temporal_patch_size": 2, "image_processor_type": "Qwen2VLImageProcessor"},
                                             "train_qwen_shapes")
    return model, QwenProcessor(tokenizer, image_config, CHAT_TEMPLATE, processor_class="Qwen2_5_VLProcessor")


def _tokenizer(words: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from topv.testing.qwen import SPECIAL_TOKENS

    vocab_list = ["<unk>", *SPECIAL_TOKENS, "user", "assistant"] + [w for w in words if w not in ("USER:", "ASSISTANT:")]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab_list)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=list(SPECIAL_TOKENS))


def pack_scene(model: Any, processor: Any, questions: list[Any]) -> dict[str, Any]:
    """One decoder row for one scene: the image prefix once, then each question + answer, at their own positions.

    Returns ids, labels (answer tokens and <|im_end|> only, aligned to the predicting position), M-RoPE
    positions (3, L), a causal-within-segment boolean mask (L, L) and each question's answer position.
    """
    import torch

    from topv.families import get_family

    tok = processor.tokenizer
    n = (IMAGE_HW[0] // 28) * (IMAGE_HW[1] // 28)
    full = [tok(processor.format_prompt(q.question).replace("<|image_pad|>", "<|image_pad|>" * n) + f"{q.answer}<|im_end|>",
                add_special_tokens=False)["input_ids"] for q in questions]
    prefix = full[0].index(processor.image_token_id) + n + 1  # up to and including <|vision_end|>
    family = get_family("qwen2_vl")
    spec = family.spec(model.config.to_dict(), IMAGE_HW)
    prefix_pos = family.position_ids(torch.tensor([full[0][:prefix]]), spec)[:, 0]  # (3, prefix)
    start = int(prefix_pos.max()) + 1
    ids, pos, seg, labels, answer_at = list(full[0][:prefix]), [prefix_pos], [0] * prefix, [-100] * prefix, []
    for j, (seq, q) in enumerate(zip(full, questions), start=1):
        tail = seq[prefix:]
        prompt_len = len(tok(processor.format_prompt(q.question), add_special_tokens=False)["input_ids"]) - 1 + n - prefix
        answer_at.append(len(ids) + prompt_len - 1)  # the last prompt token predicts the first answer token
        labels += [-100] * (prompt_len - 1) + tail[prompt_len:] + [-100]  # position i predicts token i + 1
        ids += tail
        seg += [j] * len(tail)
        pos.append(torch.arange(start, start + len(tail)).expand(3, -1))
    segment = torch.tensor(seg)
    q, k = segment[:, None], segment[None, :]
    mask = torch.ones(len(ids), len(ids), dtype=torch.bool).tril() & ((k == 0) | (k == q))
    return {"ids": torch.tensor(ids), "labels": torch.tensor(labels), "positions": torch.cat(pos, dim=1), "mask": mask,
            "answer_at": answer_at, "answers": [tok(f"{qq.answer}", add_special_tokens=False)["input_ids"][0] for qq in questions]}


def forward(model: Any, processor: Any, images: list[Any], questions: list[list[Any]]) -> dict[str, Any]:
    """Vision once per image, packed decoder rows; returns the loss, the visual features and first-token hits."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    pixels = [processor.pixels(image) for image in images]
    pv = torch.from_numpy(np.concatenate([p[0] for p in pixels]))
    grid = torch.from_numpy(np.concatenate([p[1] for p in pixels]))
    feats = torch.stack(list(model.model.get_image_features(pv, grid).pooler_output))  # (scenes, 144, D)
    rows = [pack_scene(model, processor, qs) for qs in questions]
    # A fixed width (a multiple of 64): CPU kernels are planned per shape, and a new width every step costs seconds.
    width = -(-max(len(r["ids"]) for r in rows) // 64) * 64
    lm = model.model.language_model
    embeds, positions, masks, labels = [], [], [], []
    for r, f in zip(rows, feats):
        pad = width - len(r["ids"])
        e = lm.embed_tokens(r["ids"])
        e = e.masked_scatter((r["ids"] == model.config.image_token_id)[:, None].expand_as(e), f)
        embeds.append(F.pad(e, (0, 0, 0, pad)))
        positions.append(F.pad(r["positions"], (0, pad)))
        m = F.pad(r["mask"], (0, pad, 0, pad))
        m[len(r["ids"]):, 0] = True  # padding rows attend to token 0 (their outputs are unused)
        masks.append(m)
        labels.append(F.pad(r["labels"], (0, pad), value=-100))
    hidden = lm(inputs_embeds=torch.stack(embeds), position_ids=torch.stack(positions, dim=1),
                attention_mask={"full_attention": torch.stack(masks)[:, None]}).last_hidden_state
    logits = model.lm_head(hidden)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.stack(labels).reshape(-1), ignore_index=-100)
    hits = [int(logits[i, a].argmax()) == want for i, r in enumerate(rows) for a, want in zip(r["answer_at"], r["answers"])]
    return {"loss": loss, "features": feats, "hits": hits}


def aux_loss(head: Any, features: Any, scenes: list[Any]) -> Any:
    """The dense per-cell loss of the LLaVA recipe on the merged tokens (one 16-px slot of the scene each)."""
    import torch
    import torch.nn.functional as F

    from tools.data.shapes import PATCH_LABEL_CLASSES, patch_labels

    logits = head(features)
    labels = [patch_labels(s, 16) for s in scenes]
    total, at = 0.0, 0
    for name, n in PATCH_LABEL_CLASSES.items():
        target = torch.tensor([lab[name] for lab in labels])
        total = total + F.cross_entropy(logits[..., at:at + n].reshape(-1, n), target.reshape(-1))
        at += n
    return total / len(PATCH_LABEL_CLASSES)


def quick_accuracy(model: Any, processor: Any, records: list[dict[str, Any]]) -> float:
    """Share of val records whose greedy first answer token is right (one packed row per record)."""
    from types import SimpleNamespace

    import torch
    from PIL import Image

    model.eval()
    hits = []
    with torch.no_grad():
        for i in range(0, len(records), 16):
            chunk = records[i:i + 16]
            images = [Image.open(r["image"]).convert("RGB") for r in chunk]
            hits += forward(model, processor, images, [[SimpleNamespace(**r)] for r in chunk])["hits"]
    model.train()
    return sum(hits) / max(1, len(hits))


def train(args: argparse.Namespace) -> dict[str, Any]:
    import math

    import torch

    from tools.data.shapes import PATCH_LABEL_CLASSES, make_rng, render_scene, sample_scene_questions
    from tools.data.writer import read_split

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal activations and gradients otherwise slow CPU steps down several times
    random.seed(args.seed)
    model, processor = build_model(args.seed, args.init_std)
    if args.init_from:
        from transformers import Qwen2_5_VLForConditionalGeneration

        model.load_state_dict(Qwen2_5_VLForConditionalGeneration.from_pretrained(args.init_from).state_dict(), strict=True)
    head = torch.nn.Linear(model.config.text_config.hidden_size, sum(PATCH_LABEL_CLASSES.values()))
    params = [p for p in model.parameters()] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=args.weight_decay)
    val = [dict(r) for r in read_split(args.val)[: args.eval_samples]] if args.val and Path(args.val).is_file() else []
    rng = make_rng("train-qwen", args.seed)
    per_step = args.batch_size // args.questions_per_image
    log.info("model: %.2fM parameters; %d scenes x %d questions per step", sum(p.numel() for p in model.parameters()) / 1e6,
             per_step, args.questions_per_image)
    start, history, window = time.time(), [], {"loss": 0.0, "aux": 0.0, "hits": [], "n": 0}
    model.train()
    for step in range(args.steps):
        scenes, questions = zip(*(sample_scene_questions(rng, args.questions_per_image) for _ in range(per_step)))
        lr = args.lr * (min(1.0, (step + 1) / args.warmup) if step < args.warmup else
                        args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * (step - args.warmup) /
                                                                                        max(1, args.steps - args.warmup))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        out = forward(model, processor, [render_scene(s) for s in scenes], [list(q) for q in questions])
        aux = aux_loss(head, out["features"], list(scenes)) if args.aux_weight else torch.zeros(())
        optimizer.zero_grad(set_to_none=True)
        (out["loss"] + args.aux_weight * aux).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        window["loss"] += out["loss"].item()
        window["aux"] += aux.item()
        window["hits"] += out["hits"]
        window["n"] += 1
        done, minutes = step + 1, (time.time() - start) / 60
        if done % args.log_every == 0:
            record = {"step": done, "loss": window["loss"] / window["n"], "aux": window["aux"] / window["n"],
                      "train_acc": sum(window["hits"]) / len(window["hits"]), "minutes": round(minutes, 2), "lr": lr}
            log.info("step %(step)d  loss %(loss).4f  aux %(aux).4f  train-acc %(train_acc).3f  lr %(lr).2e  %(minutes).1f min", record)
            history.append(record)
            window = {"loss": 0.0, "aux": 0.0, "hits": [], "n": 0}
        stop = args.minutes is not None and minutes >= args.minutes
        if val and (done % args.eval_every == 0 or done == args.steps or stop):
            acc = quick_accuracy(model, processor, val)
            log.info("step %d  val first-token accuracy %.3f on %d", done, acc, len(val))
            history.append({"step": done, "val_acc": acc, "minutes": round(minutes, 2)})
        if stop:
            log.info("stopping at step %d: --minutes %.1f reached", done, args.minutes)
            break
    return _save(model, processor, args, history, time.time() - start, done)


def _save(model: Any, processor: Any, args: argparse.Namespace, history: list[dict[str, Any]], seconds: float, steps: int) -> dict[str, Any]:
    import torch
    import transformers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    processor.save(out)
    summary = {"command": "python -m tools.training.train_qwen_shapes " + " ".join(sys.argv[1:]), "args": vars(args),
               "steps": steps, "train_minutes": round(seconds / 60, 2), "parameters": sum(p.numel() for p in model.parameters()),
               "torch": torch.__version__, "transformers": transformers.__version__, "history": history}
    (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("saved %s (%d steps, %.1f min)", out, steps, seconds / 60)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if Path(args.out).exists():
        raise SystemExit(f"{args.out} exists; remove it or pass another folder")
    train(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
