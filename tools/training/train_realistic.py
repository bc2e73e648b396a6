"""Train the realistic model's projector and LoRA adapters on shapes-VQA, on the CPU, within a time budget.

    python -m tools.training.train_realistic --out models/realistic/adapter.safetensors --seed 0 --minutes 90

The realistic LLaVA model (:mod:`tools.realistic.build`: DINOv2-S/14 -> 2-layer MLP projector ->
SmolLM2-135M-Instruct) is assembled in memory from the two weight packages (or loaded from ``--model DIR``, a
checkpoint built with ``--no-adapter``). DINOv2 and SmolLM2 stay frozen; the projector (re-initialized from
the seed) and rank-``r`` LoRA matrices on the decoder's linear layers are trained end to end with the answer
loss. The result is a small adapter file (:func:`tools.realistic.build.save_adapter`) that the model build
applies (projector loaded, LoRA deltas folded into the decoder weights).

Data: scenes are generated on the fly from the seed (stream ``train/<seed>`` of :mod:`tools.data.shapes`,
disjoint from the val/test streams) and rendered at 192 px like the splits, then go through the checkpoint's
own image processor (resize to 224 px). Each prompt is exactly what evaluation feeds the model: SmolLM2's
chat template with ``<image>\\n`` before the question and the generation prompt, followed by the answer and
``<|im_end|>``; the loss covers those answer tokens only.

CPU cost is dominated by the 256 image tokens going through the 30 decoder layers, so each image is used for
several questions at once ("packing"): the shared prefix (system prompt, user header, image tokens) is run
once and every question segment attends to that prefix and to itself only (a 4D attention mask, and position
ids restarting after the prefix for every segment). Each segment therefore sees exactly the single-question
prompt, as in evaluation, while the expensive prefix is paid once per image (the tests check the equivalence).
The LM head is applied only at the answer positions. DINOv2 runs without gradients.

Stage 1 (``--align-images``, default 480, about a minute): before the end-to-end stage, the projector alone
is fitted, without any LM backprop, so that each patch's output lies near the SmolLM2 input embeddings of
words describing that patch (its shape's colour, shape and size or "background", and the row/column words of
its 3 x 3 layout cell); see :func:`align_projector`. In short runs it lowered the answer loss before any
end-to-end step (8.7 -> 7.0-7.5 on the monitor set); beyond that its effect was within noise.

Progress (loss, running accuracy, throughput) is logged; a held-out monitor set (stream ``monitor/<seed>``,
not the val/test splits) is scored periodically, and the adapter file is saved periodically, so an
interrupted run leaves a usable adapter. ``--minutes`` stops cleanly (and saves) when the budget is spent.
With ``--steps 0`` (default) the number of steps of the learning-rate schedule is fitted to the budget from
the speed of the first steps and recorded (``--steps N`` repeats a run exactly). Results are deterministic
given the seed and the step count, up to torch's CPU kernels (thread counts may change reduction order).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("tools.training.realistic")

DEFAULT_OUT = "models/realistic/adapter.safetensors"
DEFAULT_TARGETS = "q_proj,k_proj,v_proj,o_proj"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.training.train_realistic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="base checkpoint built with `python -m tools.realistic.build --no-adapter` (default: assemble "
                   "it in memory from the weight packages)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"adapter file to write (default: {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=90.0, help="wall-clock budget of the training loop (default 90)")
    p.add_argument("--steps", type=int, default=0,
                   help="optimizer steps the learning-rate schedule spans (training stops earlier if --minutes runs out). "
                   "0 (default): fit them to --minutes from the speed of the first --calibration-steps steps; the chosen "
                   "number is logged and stored in the adapter's metadata (pass it as --steps to repeat the run exactly)")
    p.add_argument("--calibration-steps", type=int, default=7,
                   help="steps timed to choose --steps 0 (at most --warmup; steps 3-4 try the other thread count)")
    p.add_argument("--images-per-step", type=int, default=2, help="images per optimizer step (gradient accumulation)")
    p.add_argument("--questions-per-image", type=int, default=12, help="question segments packed after each image")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the projector")
    p.add_argument("--lora-lr", type=float, default=1e-3, help="peak learning rate of the LoRA matrices")
    p.add_argument("--warmup", type=int, default=20, help="linear warm-up steps (then cosine decay)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (0: train the projector only)")
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-targets", default=DEFAULT_TARGETS,
                   help=f"comma list of decoder linear layers (default: {DEFAULT_TARGETS})")
    p.add_argument("--lora-layers", default="all", help="decoder layers with LoRA: 'all' or a comma list / range like 0-29")
    p.add_argument("--init-adapter", default=None, metavar="FILE",
                   help="start from an adapter file (projector and LoRA) instead of a fresh initialization, to continue "
                        "training; its LoRA rank/targets must match. Skips stage 1. Use another --seed for fresh data.")
    p.add_argument("--align-images", type=int, default=480,
                   help="stage 1: images for aligning the projector's patch outputs with word embeddings (0: skip)")
    p.add_argument("--align-batch", type=int, default=8)
    p.add_argument("--align-lr", type=float, default=2e-3)
    p.add_argument("--monitor-images", type=int, default=16, help="held-out generated images scored periodically (0: off)")
    p.add_argument("--monitor-every", type=float, default=15.0, help="minutes between monitor evaluations")
    p.add_argument("--save-every", type=float, default=10.0, help="minutes between adapter checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="optimizer steps between log lines")
    p.add_argument("--save-dtype", choices=("float16", "float32"), default="float16",
                   help="storage precision of the adapter file (default float16: half the size; loaded as float32)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-adaptive-threads", dest="adaptive_threads", action="store_false",
                   help="keep --threads fixed. By default training starts on 1 thread, steps 3-4 and then one step every "
                   "--thread-probe-every steps run with the other thread count (1 or --threads), and the faster one (time per "
                   "token) is kept: on this shared 2-core machine 2 OpenMP threads were measured 3-7x slower than 1 while "
                   "another process held a core, and ~1.5x faster on a quiet machine")
    p.add_argument("--thread-probe-every", type=int, default=30,
                   help="steps between one-step probes of the other thread count (doubled after each probe that loses)")
    p.add_argument("--log-file", default=None, help="also write the log to this file")
    return p


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Pack:
    """One image and several questions about it, as token ids (prefix shared, one segment per question)."""

    pixel_values: Any  # (1, 3, 224, 224)
    prefix: list[int]  # system prompt, user header and the image tokens
    segments: list[list[int]]  # "\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>"
    prompt_lengths: list[int]  # tokens of each segment before the answer
    qtypes: list[str]
    answers: list[str]


class PromptCodec:
    """Token ids of evaluation-identical prompts, split into the shared prefix and the question segment."""

    def __init__(self, processor: Any, image_tokens: int) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_tokens = image_tokens
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._prefix: list[int] | None = None

    def prompt_text(self, question: str) -> str:
        from topv.families.llava import LlavaProcessor

        return LlavaProcessor(self.processor).format_prompt(question)

    def ids(self, text: str) -> list[int]:
        image = self.processor.image_token
        return self.tokenizer(text.replace(image, image * self.image_tokens), add_special_tokens=False)["input_ids"]

    def split(self, question: str, answer: str) -> tuple[list[int], list[int], int]:
        """``(prefix, segment, prompt_length)``: prefix + segment[:prompt_length] is the evaluation prompt."""
        text = self.prompt_text(question)
        prompt = self.ids(text)
        full = self.ids(text + answer + "<|im_end|>")
        if full[: len(prompt)] != prompt or full[-1] != self.end_id or len(full) <= len(prompt) + 1:
            raise ValueError(f"answer {answer!r} does not tokenize after the prompt")
        positions = [i for i, t in enumerate(prompt) if t == self.image_token_id]
        if len(positions) != self.image_tokens or positions[-1] - positions[0] + 1 != self.image_tokens:
            raise ValueError("the prompt does not hold one contiguous run of image tokens")
        cut = positions[-1] + 1
        prefix = prompt[:cut]
        if self._prefix is None:
            self._prefix = prefix
        elif prefix != self._prefix:
            raise ValueError("the prompt prefix differs between questions")
        return prefix, full[cut:], len(prompt) - cut


def scene_questions(scene: Any, rng: random.Random, count: int) -> list[Any]:
    """Up to ``count`` distinct questions about ``scene``: one of each type (shuffled), then more of random types."""
    from tools.data.shapes import QUESTION_TYPES, make_question

    out, seen = [], set()
    order = list(QUESTION_TYPES)
    rng.shuffle(order)
    tries = 0
    while len(out) < count and tries < 4 * count + len(order):
        qtype = order[tries] if tries < len(order) else rng.choice(QUESTION_TYPES)
        tries += 1
        q = make_question(scene, qtype, rng)
        if q is not None and q.question not in seen:
            seen.add(q.question)
            out.append(q)
    return out


def make_pack(codec: PromptCodec, rng: random.Random, questions_per_image: int) -> Pack:
    """A freshly generated scene (192 px, like the splits), its pixels and ``questions_per_image`` questions."""
    from tools.data.shapes import generate_scene, render_scene

    scene = generate_scene(rng)
    questions = scene_questions(scene, rng, questions_per_image)
    image = render_scene(scene).convert("RGB")
    pixels = codec.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    prefix, segments, lengths = None, [], []
    for q in questions:
        prefix, segment, n = codec.split(q.question, q.answer)
        segments.append(segment)
        lengths.append(n)
    return Pack(pixels, prefix, segments, lengths, [q.qtype for q in questions], [q.answer for q in questions])


def packed_inputs(pack: Pack) -> dict[str, Any]:
    """Ids, position ids, the boolean (L, L) attention mask and the label positions/targets of a pack.

    The prefix is causal; each segment attends to the whole prefix and causally to itself, with positions
    continuing from the prefix, so every segment computes what the single-question prompt computes.
    """
    import torch

    p = len(pack.prefix)
    ids = list(pack.prefix)
    positions = list(range(p))
    spans = []
    for seg in pack.segments:
        start = len(ids)
        ids.extend(seg)
        positions.extend(range(p, p + len(seg)))
        spans.append((start, len(seg)))
    n = len(ids)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[:p, :p] = torch.tril(torch.ones(p, p, dtype=torch.bool))
    label_pos, label_ids, owner = [], [], []
    for k, ((start, length), prompt_len) in enumerate(zip(spans, pack.prompt_lengths)):
        mask[start : start + length, :p] = True
        mask[start : start + length, start : start + length] = torch.tril(torch.ones(length, length, dtype=torch.bool))
        for j in range(prompt_len, length):  # answer tokens and <|im_end|>, predicted from the token before
            label_pos.append(start + j - 1)
            label_ids.append(ids[start + j])
            owner.append(k)
    return {
        "input_ids": torch.tensor(ids),
        "position_ids": torch.tensor(positions),
        "mask": mask,
        "label_positions": torch.tensor(label_pos),
        "labels": torch.tensor(label_ids),
        "owner": torch.tensor(owner),
    }


# ------------------------------------------------------------------------------------------------ model
def image_features(model: Any, pixel_values: Any) -> Any:
    """The vision tower's selected hidden state without CLS, (B, 256, 384), without gradients."""
    import torch

    cfg = model.config
    with torch.no_grad():
        out = model.model.vision_tower(pixel_values=pixel_values, output_hidden_states=True)
        feats = out.hidden_states[cfg.vision_feature_layer]
        if cfg.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]
    return feats


def packed_forward(model: Any, pack: Pack, inputs: dict[str, Any], features: Any | None = None) -> tuple[Any, Any]:
    """``(logits at the label positions, features)`` of a pack through the LLaVA model (projector with grad)."""
    if features is None:
        features = image_features(model, pack.pixel_values)
    lm = model.model.language_model
    ids = inputs["input_ids"]
    image_id = model.config.image_token_index
    embeds = lm.embed_tokens(ids).detach()
    projected = model.model.multi_modal_projector(features)[0]  # (256, 576)
    where = (ids == image_id).nonzero().squeeze(1)
    if where.numel() != projected.shape[0]:
        raise ValueError(f"{where.numel()} image tokens for {projected.shape[0]} features")
    embeds = embeds.index_put((where,), projected)
    hidden = lm(
        inputs_embeds=embeds[None],
        attention_mask=inputs["mask"][None, None],
        position_ids=inputs["position_ids"][None],
        use_cache=False,
    ).last_hidden_state[0]
    logits = model.lm_head(hidden[inputs["label_positions"]])
    return logits, features


def score(logits: Any, inputs: dict[str, Any], pack: Pack) -> tuple[Any, list[bool], list[bool]]:
    """``(mean token loss, first-token hits, full-answer hits)``: a full hit means every answer token and the end
    token are the argmax (what greedy decoding would produce)."""
    import torch

    labels = inputs["labels"]
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    correct = (logits.argmax(-1) == labels).tolist()
    owner = inputs["owner"].tolist()
    first, full = [], []
    for k in range(len(pack.segments)):
        mine = [c for c, o in zip(correct, owner) if o == k]
        first.append(bool(mine[0]))
        full.append(all(mine))
    return loss, first, full


class LoRA:
    """Trainable LoRA matrices attached to a LLaVA model's decoder through forward hooks (unfolded)."""

    def __init__(self, model: Any, rank: int, alpha: float, targets: Sequence[str], layers: Sequence[int], seed: int) -> None:
        import torch

        from tools.realistic.build import lora_hooks

        self.rank, self.alpha, self.targets = rank, alpha, tuple(targets)
        gen = torch.Generator().manual_seed(seed + 1)
        self.params: dict[str, tuple[Any, Any]] = {}
        for i in layers:
            for name in targets:
                group = "mlp" if name in ("gate_proj", "up_proj", "down_proj") else "self_attn"
                path = f"model.language_model.layers.{i}.{group}.{name}"
                linear = model.get_submodule(path)
                bound = 1.0 / math.sqrt(linear.in_features)  # kaiming_uniform(a=sqrt(5)), as peft initializes A
                a = torch.nn.Parameter((torch.rand(rank, linear.in_features, generator=gen) * 2 - 1) * bound)
                b = torch.nn.Parameter(torch.zeros(linear.out_features, rank))
                self.params[path] = (a, b)
        self.handles = lora_hooks(model, self.params, self.scale) if self.params else []

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def parameters(self) -> list[Any]:
        return [t for pair in self.params.values() for t in pair]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def load_base_model(model_dir: str | None, seed: int, threads: int) -> tuple[Any, Any]:
    """The LLaVA model without any adapter, and its processor."""
    import torch

    from topv.errors import ConfigError
    from tools.realistic import build as R

    torch.set_num_threads(threads)
    if model_dir:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        if (Path(model_dir) / R.ADAPTER_PROVENANCE).is_file():
            raise ConfigError(f"{model_dir} was built with an adapter (its LoRA deltas are folded in); train from a checkpoint "
                              "built with `python -m tools.realistic.build --no-adapter`, or leave out --model.")
        model = LlavaForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    else:
        lm, tokenizer = R.load_smollm2(verify=False)
        vision = R.load_dinov2(verify=False)
        model, processor = R.assemble_realistic_llava(lm, tokenizer, vision, seed=seed)
        del lm, vision
    model.eval()  # no dropout anywhere; gradients still flow
    for p in model.parameters():
        p.requires_grad_(False)
    vision, text = model.config.vision_config.hidden_size, model.config.text_config.hidden_size
    state = R.random_projector(vision, text, seed)
    model.model.multi_modal_projector.load_state_dict(state)
    for p in model.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    return model, processor


def parse_layers(text: str, num_layers: int) -> list[int]:
    if text.strip() == "all":
        return list(range(num_layers))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = (int(x) for x in part.split("-"))
            out.extend(range(a, b + 1))
        elif part:
            out.append(int(part))
    if not out or any(not 0 <= i < num_layers for i in out):
        raise SystemExit(f"--lora-layers must name layers in 0..{num_layers - 1}; got {text!r}")
    return sorted(set(out))


# ------------------------------------------------------------------------------------------------ stage 1
BACKGROUND_WORD = "background"


def patch_labels(scene: Any, grid: int = 16, min_cover: float = 0.25) -> list[Any]:
    """For each of the ``grid x grid`` patches of the rendered scene (row-major, as the vision tower orders
    them): the object covering most of it (at least ``min_cover`` of its pixels), or None for background."""
    import numpy as np

    from tools.data.shapes import Scene, render_scene

    size = scene.image_size
    if size % grid:
        raise ValueError(f"image size {size} is not a multiple of the {grid} x {grid} patch grid")
    cell = size // grid
    cover = []
    for obj in scene.objects:
        alone = Scene(objects=(obj,), background=scene.background, image_size=size, grid=scene.grid)
        mask = np.asarray(render_scene(alone)) != 0
        cover.append(mask.reshape(grid, cell, grid, cell).mean(axis=(1, 3)).reshape(-1))
    if not cover:
        return [None] * grid * grid
    cover = np.stack(cover)  # (objects, patches)
    best = cover.argmax(0)
    return [scene.objects[b] if cover[b, i] >= min_cover else None for i, b in enumerate(best)]


def word_embeddings(model: Any, tokenizer: Any, words: Sequence[str]) -> dict[str, Any]:
    """Each word's input embedding: the mean of its tokens' rows (as the word is written in an answer)."""
    import torch

    table = model.model.language_model.embed_tokens.weight.detach()
    out = {}
    for w in words:
        ids = tokenizer(w, add_special_tokens=False)["input_ids"]
        out[w] = table[torch.tensor(ids)].mean(0)
    return out


def patch_words(obj: Any, index: int, side: int) -> list[str]:
    """The words describing patch ``index`` of a ``side x side`` grid: the shape's colour, shape and size (or
    "background"), then the row and column words of the 3 x 3 layout cell the patch lies in."""
    row, col = divmod(index, side)
    where = [("top", "middle", "bottom")[row * 3 // side], ("left", "center", "right")[col * 3 // side]]
    what = [BACKGROUND_WORD] if obj is None else [obj.color, obj.shape, obj.size]
    return what + where


def align_projector(model: Any, codec: PromptCodec, rng: random.Random, images: int, batch: int, lr: float, budget_s: float) -> dict[str, Any]:
    """Stage 1 (no LM backprop): fit the projector so that each patch's output is close to the word embeddings
    of what the patch shows and where (:func:`patch_words`; target: the sum of the words' embeddings over the
    square root of their number, about an embedding's norm), with a loss balanced between shape and
    background patches. DINOv2's patch features encode the 3 x 3 row and column linearly (~96% accuracy of a
    ridge probe, measured), so the position words are reachable for the per-patch projector."""
    import torch

    from tools.data.shapes import COLORS, SHAPES, SIZES, generate_scene, render_scene

    t0 = time.time()
    words = word_embeddings(model, codec.tokenizer, [*COLORS, *SHAPES, *SIZES, BACKGROUND_WORD, "top", "middle", "bottom",
                                                     "left", "center", "right"])
    projector = model.model.multi_modal_projector
    optimizer = torch.optim.AdamW(projector.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    steps = max(1, images // batch)
    grid = codec.image_tokens
    side = int(round(grid ** 0.5))
    seen, losses = 0, []
    for step in range(steps):
        if time.time() - t0 > budget_s:
            break
        scenes = [generate_scene(rng) for _ in range(batch)]
        pixels = codec.processor.image_processor(images=[render_scene(s).convert("RGB") for s in scenes], return_tensors="pt")["pixel_values"]
        targets, is_obj = [], []
        for s in scenes:
            for index, obj in enumerate(patch_labels(s, side)):
                names = patch_words(obj, index, side)
                targets.append(torch.stack([words[w] for w in names]).sum(0) / math.sqrt(len(names)))
                is_obj.append(obj is not None)
        target = torch.stack(targets).reshape(batch, grid, -1)
        obj = torch.tensor(is_obj).reshape(batch, grid)
        feats = image_features(model, pixels)
        for g in optimizer.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        out = projector(feats)
        err = ((out - target) ** 2).mean(-1)
        loss = err[obj].mean() + err[~obj].mean() if obj.any() else err.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += batch
        losses.append(loss.item())
        if (step + 1) % 10 == 0 or step + 1 == steps:
            log.info("align step %d/%d  loss %.4f  images %d  %.1f min", step + 1, steps, sum(losses[-10:]) / len(losses[-10:]), seen,
                     (time.time() - t0) / 60)
    return {"align_images": seen, "align_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
            "align_minutes": round((time.time() - t0) / 60, 2)}


# ------------------------------------------------------------------------------------------------ training
def plan_steps(done: int, step_times: Sequence[float], seconds_left: float, monitor_seconds: float, args: argparse.Namespace) -> int:
    """Total steps that fit ``seconds_left`` at the mean of ``step_times``, minus the expected monitor
    evaluations and a 2% margin."""
    per_step = sum(step_times) / len(step_times)
    monitors = seconds_left / (args.monitor_every * 60) if args.monitor_every and args.monitor_images else 0.0
    usable = seconds_left * 0.98 - (monitors + 1) * monitor_seconds - 5.0
    return max(done + 1, done + int(usable / per_step))


def lr_factor(step: int, args: argparse.Namespace, total: int | None = None) -> float:
    """Linear warm-up over ``args.warmup`` steps, then cosine decay to ``args.min_lr_ratio`` at ``total`` steps
    (default ``args.steps``)."""
    total = total or args.steps
    if step < args.warmup:
        return (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def monitor(model: Any, packs: Sequence[Pack]) -> tuple[float, float, float, dict[str, float]]:
    """``(mean answer loss, first-token accuracy, full-answer accuracy, full-answer accuracy per type)`` on
    held-out packs (teacher-forced; a full-answer hit is what greedy decoding would answer)."""
    import torch

    hits: dict[str, list[int]] = defaultdict(list)
    first_all, losses = [], []
    with torch.no_grad():
        for pack in packs:
            inputs = packed_inputs(pack)
            logits, _ = packed_forward(model, pack, inputs)
            loss, first, full = score(logits, inputs, pack)
            losses.append(loss.item())
            first_all += first
            for t, ok in zip(pack.qtypes, full):
                hits[t].append(int(ok))
    total = [h for v in hits.values() for h in v]
    return (sum(losses) / max(1, len(losses)), sum(first_all) / max(1, len(first_all)), sum(total) / max(1, len(total)),
            {k: sum(v) / len(v) for k, v in sorted(hits.items())})


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tools.data.shapes import make_rng
    from tools.realistic import build as R

    t_start = time.time()
    budget = args.minutes * 60.0
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, processor = load_base_model(args.model, args.seed, args.threads)
    grid = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    codec = PromptCodec(processor, grid)
    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()] if args.lora_rank > 0 else []
    bad = [t for t in targets if t not in R.LORA_MODULES]
    if bad:
        raise SystemExit(f"unknown --lora-targets {bad}; choose from {', '.join(R.LORA_MODULES)}")
    layers = parse_layers(args.lora_layers, model.config.text_config.num_hidden_layers)
    lora = LoRA(model, args.lora_rank, args.lora_alpha, targets, layers, args.seed) if targets else None
    projector = model.model.multi_modal_projector
    if args.init_adapter:
        init = R.load_adapter(args.init_adapter)
        projector.load_state_dict(init.projector)
        mine = lora.params if lora else {}
        if set(init.lora) != set(mine) or (mine and (init.rank != args.lora_rank or init.alpha != args.lora_alpha)):
            raise SystemExit(f"--init-adapter {args.init_adapter} has LoRA rank {init.rank}, alpha {init.alpha} on "
                             f"{len(init.lora)} modules; this run has rank {args.lora_rank}, alpha {args.lora_alpha} on {len(mine)}.")
        with torch.no_grad():
            for path, (a, b) in mine.items():
                a.copy_(init.lora[path][0])
                b.copy_(init.lora[path][1])
        args.align_images = 0
        log.info("continuing from %s", args.init_adapter)
    groups = [{"params": list(projector.parameters()), "lr": args.lr, "base_lr": args.lr}]
    if lora:
        groups.append({"params": lora.parameters(), "lr": args.lora_lr, "base_lr": args.lora_lr})
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8, weight_decay=args.weight_decay)
    trainable = sum(p.numel() for g in groups for p in g["params"])
    log.info("trainable: projector %s + LoRA %s parameters (rank %d, alpha %g, %s on %d layers); setup %.1f s",
             f"{sum(p.numel() for p in projector.parameters()):,}", f"{trainable - sum(p.numel() for p in projector.parameters()):,}",
             args.lora_rank, args.lora_alpha, ",".join(targets) or "-", len(layers) if lora else 0, time.time() - t_start)

    monitor_rng = make_rng("monitor", args.seed)
    monitor_packs = [make_pack(codec, monitor_rng, args.questions_per_image) for _ in range(args.monitor_images)]
    history: list[dict[str, Any]] = []
    totals: dict[str, Any] = {"images": 0, "questions": 0, "answer_tokens": 0, "steps": 0}
    if args.adaptive_threads:
        torch.set_num_threads(1)  # the cheap stage 1 and the first monitor run on one thread (see --no-adaptive-threads)
    if args.align_images:
        if monitor_packs:
            loss, first, full, _ = monitor(model, monitor_packs)
            log.info("before alignment: monitor loss %.4f  first-token %.3f  full answer %.3f", loss, first, full)
        totals.update(align_projector(model, codec, make_rng("align", args.seed), args.align_images, args.align_batch,
                                      args.align_lr, budget - (time.time() - t_start)))
    rng = make_rng("train", args.seed)
    window = {"loss": 0.0, "n": 0, "first": 0, "full": 0, "q": 0}
    run_types: dict[str, list[int]] = defaultdict(list)
    command = "python -m tools.training.train_realistic " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith(
        "train_realistic.py") else None

    def save(complete: bool, reason: str) -> Path:
        proj = {k: v.detach().clone() for k, v in projector.state_dict().items()}
        lora_state = {k: (a.detach().clone(), b.detach().clone()) for k, (a, b) in lora.params.items()} if lora else {}
        meta = {
            "training": {
                "script": "tools.training.train_realistic",
                "command": command,
                "args": {k: v for k, v in vars(args).items() if k not in ("log_file",)},
                "complete": complete,
                "stopped": reason,
                **totals,
                "train_minutes": round((time.time() - t_loop) / 60, 2),
                "history": history[-40:],
                "data": "tools.data.shapes generated on the fly, stream train/<seed>; 192 px scenes",
                "versions": {"torch": torch.__version__, "transformers": _version("transformers"), "python": platform.python_version()},
            }
        }
        path = R.save_adapter(args.out, proj, lora_state, rank=args.lora_rank if lora else 0, alpha=args.lora_alpha if lora else 0.0,
                              targets=targets, metadata=meta, dtype=args.save_dtype)
        log.info("saved %s (%.2f MB; %s)", path, path.stat().st_size / 1e6, reason)
        return path

    def run_monitor(step: int) -> None:
        if not monitor_packs:
            return
        t0 = time.time()
        loss, first, full, per_type = monitor(model, monitor_packs)
        n = sum(len(p.segments) for p in monitor_packs)
        log.info("step %d  monitor (%d held-out questions): loss %.4f  first-token %.3f  full answer %.3f  [%s]  (%.0f s)", step, n, loss,
                 first, full, "  ".join(f"{k} {v:.2f}" for k, v in per_type.items()), time.time() - t0)
        history.append({"step": step, "images": totals["images"], "monitor_loss": round(loss, 4), "monitor_first": round(first, 4),
                        "monitor_full": round(full, 4),
                        "monitor_per_type": {k: round(v, 3) for k, v in per_type.items()}})

    t_loop = time.time()
    budget -= t_loop - t_start  # setup counts against the budget
    last_save = last_monitor = t_loop
    run_monitor(0)
    step_times: list[float] = []
    step_rates: list[tuple[int, float]] = []  # (threads, seconds per 1000 tokens) of each step
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else args.threads
    if args.adaptive_threads and threads > 1:  # start safe on one thread; steps 3-4 try --threads
        threads, other = 1, threads
        torch.set_num_threads(1)
    probing = 0  # steps left in a probe of the other thread count
    probe_every = next_probe = args.thread_probe_every  # doubled after each probe that does not switch
    monitor_seconds = time.time() - t_loop
    reason = "steps"
    total = args.steps or None
    step = 0
    while total is None or step < total:
        elapsed = time.time() - t_loop
        estimate = (sum(step_times[-5:]) / len(step_times[-5:])) if step_times else 0.0
        if elapsed + estimate > budget:
            reason = "minutes"
            break
        if total is None and step == args.calibration_steps:
            timed = [t for t, (n, _) in zip(step_times[1:], step_rates[1:]) if n == threads] or step_times[1:] or step_times
            total = plan_steps(step, timed, budget - elapsed, monitor_seconds, args)
            totals["planned_steps"] = total
            log.info("planned %d steps for the %.1f min budget (%.1f s/step over %d timed steps, %d thread(s)); repeat exactly "
                     "with --steps %d", total, args.minutes, sum(timed) / len(timed), len(timed), threads, total)
        probe_now = step in (3, 4) if step <= args.calibration_steps else step >= next_probe
        if args.adaptive_threads and other != threads and probe_now and not probing:
            probing = 2 if step <= args.calibration_steps else 1
            torch.set_num_threads(other)
        t0 = time.time()
        step_tokens = 0
        factor = lr_factor(step, args, total or args.warmup)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        optimizer.zero_grad(set_to_none=True)
        for _ in range(args.images_per_step):
            pack = make_pack(codec, rng, args.questions_per_image)
            inputs = packed_inputs(pack)
            logits, _ = packed_forward(model, pack, inputs)
            loss, first, full = score(logits, inputs, pack)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at step {step}: {loss.item()}")
            (loss / args.images_per_step).backward()
            n_tok = int(inputs["labels"].numel())
            step_tokens += int(inputs["input_ids"].numel())
            totals["images"] += 1
            totals["questions"] += len(pack.segments)
            totals["answer_tokens"] += n_tok
            window["loss"] += loss.item()
            window["n"] += 1
            window["first"] += sum(first)
            window["full"] += sum(full)
            window["q"] += len(pack.segments)
            for t, ok in zip(pack.qtypes, full):
                run_types[t].append(int(ok))
        params = [p for g in groups for p in g["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, args.grad_clip if args.grad_clip else float("inf")))
        optimizer.step()
        totals["steps"] = step + 1
        step_times.append(time.time() - t0)
        step_rates.append((torch.get_num_threads(), 1000 * step_times[-1] / max(1, step_tokens)))
        if probing:
            probing -= 1
            if not probing:  # compare the probe with the last steps at the current count
                n_probe = 2 if step <= args.calibration_steps else 1
                mine = [r for t, r in step_rates[:-n_probe] if t == threads][-4:]
                theirs = [r for _, r in step_rates[-n_probe:]]
                if mine and sum(theirs) / len(theirs) < 0.9 * sum(mine) / len(mine):
                    log.info("step %d: %d thread(s) %.2f s/1k tokens vs %d: %.2f; switching to %d", step + 1, other,
                             sum(theirs) / len(theirs), threads, sum(mine) / len(mine), other)
                    threads, other = other, threads
                    history.append({"step": step + 1, "threads": threads})
                    probe_every = args.thread_probe_every
                elif step > args.calibration_steps:
                    probe_every *= 2
                next_probe = step + 1 + probe_every
                torch.set_num_threads(threads)
        step += 1
        done = step
        now = time.time()
        if done % args.log_every == 0:
            per_type = {k: sum(v[-40:]) / len(v[-40:]) for k, v in sorted(run_types.items())}
            rate = sum(step_times[-args.log_every:]) / len(step_times[-args.log_every:])
            log.info(
                "step %d/%s  loss %.4f  acc first %.3f full %.3f  |g| %.2f  lr x%.2f  %.1f s/step  images %d  questions %d  "
                "%.1f/%.0f min  [%s]",
                done, total or "?", window["loss"] / window["n"], window["first"] / window["q"], window["full"] / window["q"], grad_norm,
                factor, rate, totals["images"], totals["questions"], (now - t_start) / 60, args.minutes,
                " ".join(f"{k} {v:.2f}" for k, v in per_type.items()),
            )
            history.append({"step": done, "images": totals["images"], "loss": round(window["loss"] / window["n"], 4),
                            "train_full": round(window["full"] / window["q"], 4), "minutes": round((now - t_loop) / 60, 2)})
            window = {"loss": 0.0, "n": 0, "first": 0, "full": 0, "q": 0}
        if args.monitor_every and now - last_monitor >= args.monitor_every * 60:
            t_mon = time.time()
            run_monitor(done)
            last_monitor = time.time()
            monitor_seconds = last_monitor - t_mon
        if args.save_every and time.time() - last_save >= args.save_every * 60:
            save(False, f"checkpoint at step {done}")
            last_save = time.time()
    log.info("training stopped after %d steps (%s): %d images, %d questions, %.1f min", totals["steps"], reason,
             totals["images"], totals["questions"], (time.time() - t_loop) / 60)
    run_monitor(totals["steps"])
    path = save(True, f"final ({reason})")
    if lora:
        lora.remove()
    return {"adapter": str(path), **totals, "minutes": (time.time() - t_start) / 60, "history": history}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        Path(args.log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", handlers=handlers)
    for noisy in ("transformers", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.steps < 0 or args.images_per_step < 1 or args.questions_per_image < 1:
        raise SystemExit("--steps must be >= 0, --images-per-step and --questions-per-image positive")
    if not args.steps and not 1 <= args.calibration_steps <= args.warmup:
        raise SystemExit("--steps 0 needs 1 <= --calibration-steps <= --warmup (the schedule is fixed after the warm-up starts)")
    result = train(args)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
