"""Train the bundled shapes-VQA LLaVA from scratch on the CPU.

    python -m tools.training.train_shapes --out models/topv-shapes-vqa --seed 0

(``scripts/train-bundled-model.sh`` runs the two stages that made the bundled model, about 55 minutes on
2 cores.) Scenes and questions are generated on the fly from the seed (stream ``train/<seed>``, disjoint
from the val/test streams). Each example is exactly the chat-template prompt (``USER: <image> {question}
ASSISTANT:``) followed by the answer and ``</s>``; the loss covers the answer tokens and ``</s>`` only,
plus, with ``--aux-weight``, a dense per-patch loss on the visual tokens (:class:`DenseAux`). The plain
model is trained: no pruning is simulated. The result is saved like a Hugging Face checkpoint
(``save_pretrained`` of the model and of its ``LlavaProcessor``) plus ``training.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tools.data.shapes import PATCH_LABEL_CLASSES

log = logging.getLogger("tools.training")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.training.train_shapes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output checkpoint folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="shapes-vqa", help="model shape (tools.training.common.PRESETS)")
    p.add_argument("--steps", type=int, default=3600)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="final learning rate as a fraction of the peak")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (then cosine decay)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--questions-per-image", type=int, default=4,
                   help="questions asked about each training scene in a batch (the vision tower runs once per scene)")
    p.add_argument("--aux-weight", type=float, default=0.0,
                   help="weight of the auxiliary dense loss: a linear head on the projector output predicts each "
                        "patch's colour, shape, size and layout cell (tools.data.shapes.patch_labels); the head "
                        "is dropped at save, the checkpoint is a plain LLaVA (0: off)")
    p.add_argument("--curriculum-hold", type=int, default=1000, help="steps of 1-2 shape scenes at the start")
    p.add_argument("--curriculum-steps", type=int, default=2500,
                   help="step at which training scenes reach the full 3-6 shapes (0: no curriculum)")
    p.add_argument("--type-weights", default=None,
                   help="comma-separated sampling weights of the question types (default: uniform), order as QUESTION_TYPES")
    p.add_argument("--position-init", choices=("layout", "sincos", "random"), default="layout",
                   help="initial vision position embeddings (see init_positions): layout (default), sincos, random")
    p.add_argument("--override", action="append", default=None, metavar="FIELD=VALUE",
                   help="change a field of the preset's LlavaShape (repeatable), e.g. num_layers=6")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="start from the weights of a checkpoint this script saved (same preset/overrides), "
                        "e.g. to continue a run on full scenes with a fresh schedule; use another --seed so "
                        "the training scenes differ from the first run's")
    p.add_argument("--init-std", type=float, default=None, help="override the preset's initializer_range")
    p.add_argument("--val", default=None, help="validation .jsonl for periodic quick accuracy (default: data/shapes-vqa/val.jsonl if present)")
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--eval-samples", type=int, default=160)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    return p


def objects_at(step: int, args: argparse.Namespace) -> tuple[int, int]:
    """(min, max) shapes per training scene: 1-2 shapes for ``--curriculum-hold`` steps, then growing
    linearly to the full 3-6 of the evaluation splits at ``--curriculum-steps``."""
    from tools.data.shapes import MAX_OBJECTS, MIN_OBJECTS

    if step >= args.curriculum_steps:
        return MIN_OBJECTS, MAX_OBJECTS
    if step < args.curriculum_hold:
        return 1, 2
    progress = (step - args.curriculum_hold) / max(1, args.curriculum_steps - args.curriculum_hold)
    return 1 + round((MIN_OBJECTS - 1) * progress), 2 + round((MAX_OBJECTS - 2) * progress)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    floor = args.lr * args.min_lr_ratio
    return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sincos_2d(grid: int, dim: int) -> Any:
    """``(grid*grid, dim)`` fixed 2-D sine-cosine position codes (MAE-style): half the channels code the row,
    half the column; raster order."""
    import torch

    if dim % 4:
        raise ValueError(f"sincos_2d needs a dimension divisible by 4; got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def code(pos: Any) -> Any:
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([code(rows), code(cols)], dim=1).float()


def init_positions(model: Any, mode: str = "layout", layout_grid: int = 3, layout_scale: float = 8.0, sincos_scale: float = 1.0) -> None:
    """Initialize the vision tower's learned position embeddings (CLS: zeros); they stay trainable.

    ``sincos``: 2-D sine-cosine codes of (row, column) on the patch grid. ``layout``: the same in all but
    the first 8 channels, which hold a one-hot code of the task's ``layout_grid`` x ``layout_grid`` cell
    row (channels 0-2) and column (3-5), times ``layout_scale``. A strong, clean position signal from the
    first step shortens the plateau before answers depend on where things are. ``random``: CLIP's init.
    """
    import torch

    if mode == "random":
        return
    tower = model.model.vision_tower
    emb = getattr(tower, "vision_model", tower).embeddings
    weight = emb.position_embedding.weight
    grid = int(round((weight.shape[0] - 1) ** 0.5))
    dim = weight.shape[1]
    with torch.no_grad():
        weight.zero_()
        if mode == "sincos":
            weight[1:] = sincos_2d(grid, dim)
        elif mode == "layout":
            if grid % layout_grid or dim < 8 + 4:
                raise ValueError(f"layout init needs a patch grid divisible by {layout_grid} and >= 12 channels")
            codes = torch.zeros(grid * grid, dim)
            codes[:, 8:] = sincos_scale * sincos_2d(grid, dim - 8)
            cell = grid // layout_grid
            for index in range(grid * grid):
                row, col = divmod(index, grid)
                codes[index, row // cell] = layout_scale
                codes[index, layout_grid + col // cell] = layout_scale
            weight[1:] = codes
        else:
            raise ValueError(f"unknown position init {mode!r}")


def _overrides(items: list[str] | None) -> dict[str, Any]:
    """``["num_layers=6", "hidden_size=96"]`` -> LlavaShape field overrides (ints, floats or strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, value = item.split("=", 1)
        for cast in (int, float, str):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
    return out


def build_model(
    preset: str, seed: int, *, position_init: str = "layout", init_std: float | None = None, overrides: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """A freshly initialized (seeded) model for ``preset`` and its processor (task vocabulary tokenizer)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from tools.data.shapes import vocabulary
    from topv.testing.llava import build_processor, build_tokenizer, llava_config
    from tools.training.common import PRESETS

    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    if init_std is not None:
        shape = shape.replace(initializer_range=init_std)
    if overrides:
        shape = shape.replace(**overrides)
    tokenizer = build_tokenizer(vocabulary())
    processor = build_processor(tokenizer, shape)
    config = llava_config(shape, len(tokenizer))
    for cfg in (config, config.text_config, config.vision_config):
        cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    init_positions(model, position_init)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name or "embed" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def quick_accuracy(model: Any, processor: Any, records: list[dict[str, Any]], image_tokens: int, batch_size: int = 32) -> tuple[float, dict[str, float]]:
    """Share of records whose greedy first answer token is the gold answer (overall, per question type)."""
    from PIL import Image

    from tools.data.shapes import question_type
    from tools.training.common import first_token_predictions, make_batch

    was_training = model.training
    model.eval()
    hits: dict[str, list[int]] = defaultdict(list)
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        images = [Image.open(r["image"]).convert("RGB") for r in chunk]
        batch = make_batch(processor, images, [r["question"] for r in chunk], [r["answer"] for r in chunk], image_tokens)
        pred = first_token_predictions(model, batch)
        for r, ok in zip(chunk, (pred == batch.answer_ids).tolist()):
            hits[question_type(r["question"])].append(int(ok))
    model.train(was_training)
    total = [h for v in hits.values() for h in v]
    return sum(total) / max(1, len(total)), {k: sum(v) / len(v) for k, v in sorted(hits.items())}


# (patch_labels key, number of classes), in the order of the head's output slices.
AUX_TARGETS: tuple[tuple[str, int], ...] = tuple(PATCH_LABEL_CLASSES.items())


class DenseAux:
    """The auxiliary dense loss: a linear head on the projector output (the decoder's visual inputs),
    one softmax per target of :data:`AUX_TARGETS`, averaged over patches and targets.

    It makes each visual token say what its own patch shows (and where it is) from the first steps,
    which the answer loss alone teaches slowly; the labels are per patch, so information stays local.
    """

    def __init__(self, model: Any, width: int, *, zero_init: bool = False) -> None:
        import torch

        self.head = torch.nn.Linear(width, sum(n for _, n in AUX_TARGETS))
        if zero_init:  # a fresh head on trained features: no large first gradients into the projector
            torch.nn.init.zeros_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)
        self.features: Any = None
        model.model.multi_modal_projector.register_forward_hook(self._capture)

    def _capture(self, module: Any, inputs: Any, output: Any) -> None:
        self.features = output

    def loss(self, labels: Any) -> Any:
        """``labels``: ``(images, patches, len(AUX_TARGETS))`` long tensor."""
        import torch.nn.functional as F

        logits = self.head(self.features)
        total, at = 0.0, 0
        for k, (_, n) in enumerate(AUX_TARGETS):
            total = total + F.cross_entropy(logits[..., at : at + n].reshape(-1, n), labels[..., k].reshape(-1))
            at += n
        self.features = None
        return total / len(AUX_TARGETS)


def aux_labels(scenes: list[Any], patch_size: int) -> Any:
    import torch

    from tools.data.shapes import patch_labels

    rows = []
    for scene in scenes:
        lab = patch_labels(scene, patch_size)
        rows.append(torch.tensor([lab[name] for name, _ in AUX_TARGETS]).T)
    return torch.stack(rows)


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tools.data.shapes import QUESTION_TYPES, make_rng, render_scene, sample_scene_questions
    from tools.data.writer import read_split
    from tools.training.common import PRESETS, forward, make_batch, num_image_tokens

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, processor = build_model(args.preset, args.seed, position_init=args.position_init, init_std=args.init_std,
                                    overrides=_overrides(args.override))
    if args.init_from:
        from transformers import LlavaForConditionalGeneration

        # from_pretrained maps the saved key layout back onto the module tree; then copy strictly.
        start = LlavaForConditionalGeneration.from_pretrained(args.init_from, local_files_only=True)
        try:
            model.load_state_dict(start.state_dict(), strict=True)
        except RuntimeError as exc:
            raise SystemExit(f"--init-from {args.init_from}: weights do not fit this preset/overrides: {exc}") from exc
        del start
        log.info("initialized from %s", args.init_from)
    shape = PRESETS[args.preset].replace(**_overrides(args.override))
    image_tokens = num_image_tokens(model.config)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2fM parameters, %d visual tokens, %d decoder layers", args.preset, n_params / 1e6, image_tokens, shape.num_layers)

    if args.batch_size % args.questions_per_image:
        raise SystemExit("--batch-size must be a multiple of --questions-per-image")
    weights = None
    if args.type_weights:
        weights = [float(w) for w in args.type_weights.split(",")]
        if len(weights) != len(QUESTION_TYPES):
            raise SystemExit(f"--type-weights needs {len(QUESTION_TYPES)} numbers ({', '.join(QUESTION_TYPES)})")
    val_path = args.val
    if val_path is None:
        default = Path(__file__).resolve().parents[2] / "data" / "shapes-vqa" / "val.jsonl"
        val_path = str(default) if default.is_file() else ""
    val_records = read_split(val_path)[: args.eval_samples] if val_path else []

    rng = make_rng("train", args.seed)
    groups = _param_groups(model, args.weight_decay)
    aux = None
    if args.aux_weight > 0:
        # the head is not saved; continuing a run (--init-from) starts a new one at zero
        aux = DenseAux(model, model.config.text_config.hidden_size, zero_init=bool(args.init_from))
        groups[0]["params"] = groups[0]["params"] + [aux.head.weight]
        groups[1]["params"] = groups[1]["params"] + [aux.head.bias]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    model.train()
    start = time.time()
    history: list[dict[str, Any]] = []
    loss_sum, hit_sum, seen, data_time, aux_sum = 0.0, 0, 0, 0.0, 0.0
    type_hits: dict[str, list[int]] = defaultdict(list)
    for step in range(args.steps):
        t0 = time.time()
        lo, hi = objects_at(step, args)
        scenes, questions, image_index = [], [], []
        for i in range(args.batch_size // args.questions_per_image):
            scene, qs = sample_scene_questions(rng, args.questions_per_image, weights=weights,
                                               image_size=shape.image_size, min_objects=lo, max_objects=hi)
            scenes.append(scene)
            questions += qs
            image_index += [i] * len(qs)
        batch = make_batch(processor, [render_scene(s) for s in scenes], [q.question for q in questions],
                           [q.answer for q in questions], image_tokens, image_index=image_index)
        data_time += time.time() - t0
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        out, answer_logits = forward(model, batch)
        loss = out.loss
        if aux is not None:
            aux_loss = aux.loss(aux_labels(scenes, shape.patch_size))
            aux_sum += aux_loss.item()
            loss = loss + args.aux_weight * aux_loss
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}: {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        with torch.no_grad():
            pred = answer_logits.argmax(-1)
            correct = (pred == batch.answer_ids).tolist()
            hit_sum += sum(correct)
            for q, ok in zip(questions, correct):
                type_hits[q.qtype].append(int(ok))
        loss_sum += out.loss.item()
        seen += 1
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            elapsed = time.time() - start
            log.info(
                "step %d/%d  loss %.4f  aux %.4f  train-acc %.3f  lr %.2e  %.2fs/step (data %.2fs)  elapsed %.1f min  eta %.1f min",
                done, args.steps, loss_sum / seen, aux_sum / seen, hit_sum / (seen * args.batch_size), lr_at(step, args),
                elapsed / done, data_time / done, elapsed / 60, elapsed / done * (args.steps - done) / 60,
            )
            per_type = {k: sum(v) / len(v) for k, v in sorted(type_hits.items())}
            log.info("step %d  train acc by type  %s", done, "  ".join(f"{k} {v:.2f}" for k, v in per_type.items()))
            history.append({"step": done, "loss": loss_sum / seen, "train_acc": hit_sum / (seen * args.batch_size),
                            "aux_loss": aux_sum / seen, "train_per_type": per_type, "minutes": elapsed / 60})
            loss_sum, hit_sum, seen, aux_sum = 0.0, 0, 0, 0.0
            type_hits.clear()
        if val_records and (done % args.eval_every == 0 or done == args.steps):
            acc, per_type = quick_accuracy(model, processor, val_records, image_tokens)
            log.info("step %d  val first-token acc %.3f on %d  %s", done, acc, len(val_records),
                     "  ".join(f"{k} {v:.2f}" for k, v in per_type.items()))
            history.append({"step": done, "val_acc": acc, "val_per_type": per_type})
    wall = time.time() - start
    log.info("trained %d steps in %.1f min", args.steps, wall / 60)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    summary = {
        "command": "python -m tools.training.train_shapes " + " ".join(_cli_args(args)),
        "args": vars(args),
        "parameters": n_params,
        "train_minutes": round(wall / 60, 2),
        "examples_seen": args.steps * args.batch_size,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": args.threads,
        "history": history,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("saved %s", out_dir)
    return summary


def _cli_args(args: argparse.Namespace) -> list[str]:
    defaults = vars(build_parser().parse_args(["--out", args.out]))
    parts = ["--out", str(args.out)]
    for key, value in vars(args).items():
        if key != "out" and defaults.get(key) != value:
            parts += ["--" + key.replace("_", "-"), str(value)]
    return parts


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
