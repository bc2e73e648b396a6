"""``run_eval``: load the model and data, evaluate on the chosen backend, and assemble the result."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topv.errors import InputError
from topv.pruning.config import TopVConfig

log = logging.getLogger("topv.eval")


@dataclass
class EvalOptions:
    methods: list[str] = field(default_factory=lambda: ["topv", "fastv", "random", "uniform", "none"])
    keeps: list[int] | None = None  # default: 1/3, 2/9, 1/9 of the visual (grid) tokens
    layer: int = 2
    backend: str = "torch"
    config: TopVConfig = field(default_factory=TopVConfig)
    limit: int | None = None
    max_new_tokens: int = 8
    seed: int = 0
    threads: int | None = None
    work_dir: Path = Path("artifacts/eval")
    predictions: str | None = None
    precision: str | None = None  # openvino
    weights: str | None = None  # openvino
    kept_set: str = "float32"  # openvino: whether vision and layers 0..K follow precision/weights (topv.precision)
    agreement: bool = False  # exported backends: compare with ort-cpu float32 on every question

    def __post_init__(self) -> None:
        from topv.precision import check_kept_set

        if self.backend == "torch" and (self.precision or self.weights or self.agreement
                                        or check_kept_set(self.kept_set) != "float32"):
            raise InputError("--precision, --weights, --kept-set and --agreement apply to exported backends (ort-cpu, "
                             "openvino), not --backend torch.")


def default_keeps(num_grid_tokens: int) -> list[int]:
    return [max(1, round(num_grid_tokens * f)) for f in (1 / 3, 2 / 9, 1 / 9)]


def run_eval(model_dir: str | Path, data: str | Path, options: EvalOptions) -> dict[str, Any]:
    from topv.evaluation.evaluate import configurations, evaluate_torch, load_jsonl, report
    from topv.families import family_for_config, read_model_config
    from topv.versions import library_versions

    model_dir = Path(model_dir)
    raw = read_model_config(model_dir)
    family = family_for_config(raw)
    spec = family.spec(raw, family.default_image_hw(raw, model_dir))
    spec.check_layer(options.layer)
    keeps = options.keeps or default_keeps(spec.num_grid_tokens)
    examples = load_jsonl(data, options.limit)
    configurations(options.methods, keeps)  # validates the method names
    log.info("evaluating %s on %d examples: methods %s, keeps %s, layer %d, backend %s", model_dir, len(examples),
             ",".join(options.methods), keeps, options.layer, options.backend)
    predictions: list[dict[str, Any]] = []
    write = predictions.append if options.predictions else None
    t0 = time.perf_counter()
    if options.backend == "torch":
        import torch

        from topv.reference.loading import load_model

        if options.threads:
            torch.set_num_threads(options.threads)
        model, processor = load_model(model_dir)
        cells = evaluate_torch(model, processor, examples, methods=options.methods, keeps=keeps, layer=options.layer,
                               config=options.config, max_new_tokens=options.max_new_tokens, seed=options.seed,
                               on_prediction=write)
    elif options.backend in ("ort-cpu", "openvino"):
        cells = _evaluate_exported(model_dir, examples, keeps, options, write)
    else:
        raise InputError(f"topv-eval backends are torch, ort-cpu and openvino; got {options.backend!r}.")
    if options.predictions:
        from topv.cli.outputs import atomic_write

        atomic_write(Path(options.predictions), "".join(json.dumps(p) + "\n" for p in predictions).encode())
    result = report(cells, spec.num_grid_tokens)
    if options.agreement:
        result["agreement"] = {f"{c.method} keep={c.keep if c.keep is not None else 'all'}": c.agreement.to_json()
                               for c in cells if c.agreement is not None}
    result["meta"] = {
        "model": str(model_dir),
        "data": str(data),
        "n": len(examples),
        "methods": options.methods,
        "keeps": keeps,
        "layer": options.layer,
        "backend": options.backend,
        "precision": options.precision,
        "weights": options.weights,
        "kept_set": options.kept_set,
        "num_visual_tokens": spec.num_grid_tokens,
        "topv_config": options.config.to_dict(),
        "max_new_tokens": options.max_new_tokens,
        "seed": options.seed,
        "seconds": time.perf_counter() - t0,
        "versions": library_versions(),
    }
    return result


def _evaluate_exported(model_dir: Path, examples, keeps, options: EvalOptions, write):
    from topv.evaluation.agreement import Agreement, compare, summary
    from topv.evaluation.answers import answers_match
    from topv.evaluation.evaluate import Cell
    from topv.export.cache import cached_export
    from topv.export.exporter import ExportOptions
    from topv.runtime.pipeline import Pipeline

    unsupported = [m for m in options.methods if m not in ("topv", "none")]
    if unsupported:
        raise InputError(
            f"--backend {options.backend} evaluates exported graphs, which implement topv and none only; drop {unsupported} or use "
            "--backend torch."
        )
    cells = []
    plan = ([("none", None)] if "none" in options.methods else []) + [("topv", k) for k in keeps if "topv" in options.methods]
    for method, keep in plan:
        out = cached_export(model_dir, options.work_dir, ExportOptions(
            keep=keep, layer=options.layer, config=options.config, max_new_tokens=options.max_new_tokens, threads=options.threads))
        pipe = Pipeline.load(out, options.backend, threads=options.threads, precision=options.precision, weights=options.weights,
                             kept_set=options.kept_set)
        reference = Pipeline.load(out, "ort-cpu", threads=options.threads) if options.agreement else None
        cell = Cell(method, keep)
        cell.agreement = Agreement() if reference is not None else None
        for index, ex in enumerate(examples):
            if reference is not None:
                r = compare(reference, pipe, ex.image, ex.question, options.max_new_tokens, cell.agreement)
            else:
                r = pipe.generate(ex.image, ex.question, max_new_tokens=options.max_new_tokens)
            ok = answers_match(r.text, ex.answer)
            cell.total += 1
            cell.correct += ok
            if r.kept_indices is not None:
                cell.kept.append(r.kept_indices)
            if write:
                write({"index": index, "method": method, "keep": keep, "prediction": r.text, "answer": ex.answer,
                       "correct": ok, "kept_indices": r.kept_indices})
        for opened in (pipe, reference):  # two full pipelines per budget: release them before the next export
            if opened is not None:
                opened.backend.close()
        log.info("%s keep=%s: accuracy %.3f", method, keep, cell.accuracy)
        if cell.agreement is not None:
            log.info("  against ort-cpu float32: %s", summary(cell.agreement.to_json()))
        cells.append(cell)
    return cells
