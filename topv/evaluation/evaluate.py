"""Accuracy against the keep budget: TopV, FastV, random and uniform selection, and no pruning.

Every method runs in the same PyTorch reference pipeline with the same pruning layer, keep budget and
(for the score-based methods) the same recovery rule. The vision tower runs once per image; each
(method, budget) then prefills with pruning and decodes greedily. ``random`` draws a different seeded
subset per question (seed + question index), so it is a random baseline rather than one fixed mask.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Sequence

from topv.errors import InputError

log = logging.getLogger("topv.eval")

METHODS = ("topv", "fastv", "random", "uniform", "none")


@dataclass(frozen=True)
class Example:
    image: str
    question: str
    answer: str
    qtype: str | None = None


def load_jsonl(path: str | Path, limit: int | None = None) -> list[Example]:
    """Read ``{"image", "question", "answer"}`` lines; ``image`` is relative to the file.

    Raises:
        InputError: the file is missing, a line is not JSON, or a field is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Data file {str(path)!r} does not exist; pass a .jsonl file of {{image, question, answer}} lines.")
    examples: list[Example] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number} is not valid JSON ({exc}).") from exc
        missing = [k for k in ("image", "question", "answer") if not isinstance(item.get(k), str)]
        if missing:
            raise InputError(f"{path}:{number} lacks string field(s) {missing}; each line needs image, question and answer.")
        examples.append(Example(str((path.parent / item["image"]).resolve()), item["question"], item["answer"], item.get("type")))
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise InputError(f"{path} holds no examples.")
    return examples


@dataclass
class Cell:
    method: str
    keep: int | None
    correct: int = 0
    total: int = 0
    by_type: dict[str, list[int]] = field(default_factory=dict)
    kept: list[list[int]] = field(default_factory=list)
    agreement: Any = None  # evaluation.agreement.Agreement against ort-cpu float32 (--agreement)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def configurations(methods: Sequence[str], keeps: Sequence[int]) -> list[tuple[str, int | None]]:
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError(f"Unknown method(s) {bad}; choose from {', '.join(METHODS)}.")
    out: list[tuple[str, int | None]] = []
    if "none" in methods:
        out.append(("none", None))
    out += [(m, k) for k in keeps for m in methods if m != "none"]
    return out


def evaluate_torch(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    *,
    methods: Sequence[str],
    keeps: Sequence[int],
    layer: int = 2,
    config: Any = None,
    max_new_tokens: int = 8,
    seed: int = 0,
    progress_every: int = 50,
    on_prediction: Callable[[dict[str, Any]], None] | None = None,
) -> list[Cell]:
    """Accuracy of every (method, keep) on ``examples`` with the PyTorch reference pipeline."""
    import torch

    from topv.evaluation.answers import answers_match
    from topv.reference.generate import decode_tokens
    from topv.reference.loading import model_family
    from topv.reference.pipeline import ReferencePipeline
    from topv.sampling import SamplingConfig, TokenSampler, stop_ids

    configs = configurations(methods, keeps)
    pipes = {(m, k): ReferencePipeline(model, layer=layer, keep=k, method=m, config=config, seed=seed) for m, k in configs}
    cells = {key: Cell(*key) for key in configs}
    stops = stop_ids(getattr(model.generation_config, "eos_token_id", None))
    processor = model_family(model).wrap_processor(processor)
    tokenizer = processor.tokenizer
    any_pipe = next(iter(pipes.values()))
    t0 = time.perf_counter()
    with torch.no_grad():
        for index, ex in enumerate(examples):
            inputs = processor.encode(ex.image, ex.question)
            features = any_pipe.image_features(inputs)
            ids = torch.from_numpy(inputs["input_ids"])
            for key, pipe in pipes.items():
                pipe.seed = seed + index
                state = pipe.prefill(ids, inputs, image_features=features)
                tokens = list(decode_tokens(pipe, state, max_new_tokens, TokenSampler(SamplingConfig()), stops))
                pred = tokenizer.decode(tokens, skip_special_tokens=True)
                ok = answers_match(pred, ex.answer)
                cell = cells[key]
                cell.total += 1
                cell.correct += ok
                if ex.qtype:
                    cell.by_type.setdefault(ex.qtype, [0, 0])
                    cell.by_type[ex.qtype][0] += ok
                    cell.by_type[ex.qtype][1] += 1
                if state.kept_indices is not None:
                    cell.kept.append(state.kept_indices)
                if on_prediction:
                    on_prediction({"index": index, "method": key[0], "keep": key[1], "prediction": pred,
                                   "answer": ex.answer, "correct": ok, "kept_indices": state.kept_indices})
            if progress_every and ((index + 1) % progress_every == 0 or index + 1 == len(examples)):
                elapsed = time.perf_counter() - t0
                summary = ", ".join(f"{m}@{k if k is not None else 'all'} {cells[(m, k)].accuracy:.3f}" for m, k in configs)
                log.info("[%d/%d] %.0f s: %s", index + 1, len(examples), elapsed, summary)
    return list(cells.values())


def mean_overlap(cells: Sequence[Cell]) -> dict[str, dict[str, float]]:
    """Mean Jaccard overlap of kept indices between every two methods, per keep budget."""
    out: dict[str, dict[str, float]] = {}
    by_keep: dict[int, dict[str, Cell]] = {}
    for c in cells:
        if c.keep is not None and c.kept:
            by_keep.setdefault(c.keep, {})[c.method] = c
    for keep, group in sorted(by_keep.items(), reverse=True):
        pairs = {}
        for a, b in combinations(sorted(group), 2):
            values = [len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(group[a].kept, group[b].kept)]
            pairs[f"{a}|{b}"] = sum(values) / len(values)
        out[str(keep)] = pairs
    return out


def report(cells: Sequence[Cell], num_visual_tokens: int) -> dict[str, Any]:
    base = next((c for c in cells if c.method == "none"), None)
    rows = []
    for c in cells:
        row = {
            "method": c.method,
            "keep": c.keep,
            "keep_fraction": None if c.keep is None else c.keep / num_visual_tokens,
            "accuracy": c.accuracy,
            "correct": c.correct,
            "n": c.total,
            "relative_to_none": (c.accuracy / base.accuracy) if base and base.accuracy else None,
        }
        if c.by_type:
            row["by_type"] = {t: v[0] / v[1] for t, v in sorted(c.by_type.items())}
        rows.append(row)
    return {"results": rows, "kept_overlap": mean_overlap(cells)}


def table(result: dict[str, Any]) -> str:
    rows = result["results"]
    keeps = sorted({r["keep"] for r in rows if r["keep"] is not None}, reverse=True)
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    n_vis = result["meta"]["num_visual_tokens"]
    head = f"{'method':8s}" + "".join(f" {f'keep {k} ({k / n_vis:.2f})':>20s}" for k in keeps)
    lines = [head, "-" * len(head)]
    for m in methods:
        if m == "none":
            r = next(r for r in rows if r["method"] == "none")
            text = "%.3f (all %d tokens)" % (r["accuracy"], n_vis)
            lines.append(f"{'none':8s} {text:>20s}")
            continue
        cells = []
        for k in keeps:
            r = next((r for r in rows if r["method"] == m and r["keep"] == k), None)
            rel = " (%.1f%%)" % (100 * r["relative_to_none"]) if r and r["relative_to_none"] is not None else ""
            text = "%.3f%s" % (r["accuracy"], rel) if r else "-"
            cells.append(f" {text:>20s}")
        lines.append(f"{m:8s}" + "".join(cells))
    lines.append("accuracy (relative to no pruning); mean kept-index overlap (Jaccard):")
    for keep, pairs in result["kept_overlap"].items():
        lines.append(f"  keep {keep}: " + ", ".join(f"{p} {v:.2f}" for p, v in pairs.items()))
    if result.get("agreement"):
        from topv.evaluation.agreement import summary

        meta = result["meta"]
        lines.append(f"against ort-cpu float32 ({meta['backend']}, precision {meta.get('precision') or 'f32'}, "
                     f"weights {meta.get('weights') or 'as exported'}):")
        lines += [f"  {label}: {summary(entry)}" for label, entry in result["agreement"].items()]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    base = next((r for r in rows if r["method"] == "none"), None)
    for m in METHODS:
        pts = sorted((r["keep_fraction"], r["accuracy"]) for r in rows if r["method"] == m and r["keep"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    if base:
        ax.axhline(base["accuracy"], color="gray", linestyle="--", label=f"no pruning ({base['accuracy']:.3f})")
    ax.set_xlabel(f"kept fraction of the {result['meta']['num_visual_tokens']} visual tokens (after layer {result['meta']['layer']})")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{Path(result['meta']['model']).name} on {Path(result['meta']['data']).name} (n={result['meta']['n']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from topv.cli.outputs import save_figure

    return save_figure(fig, Path(path))
