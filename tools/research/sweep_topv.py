"""Choose TopV's hyperparameters on a VALIDATION split: a staged grid over the importance variant, the
feature distance, gamma/epsilon and the recovery fraction, scored by mean accuracy over the keep budgets.

    .venv/bin/python tools/research/sweep_topv.py --model models/topv-shapes-vqa --data data/shapes-vqa/val.jsonl \
        --json tools/research/results/sweep-shapes-val.json

Stage A: importance variant x feature distance x gamma (0 or 2; other fields at the current defaults).
Stage B: the best of A x gamma x epsilon.
Stage C: the best of B x recovery fraction x beta (spatial term on/off).
The "inverted" row ranks by the LOWEST importance with the winning config: a check of the direction.
Never point it at a test split: the test split is reported once, with the chosen defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("topv.sweep")


def score(model, processor, examples, config, keeps, layer, invert=False):
    from topv.evaluation.evaluate import evaluate_torch

    if invert:
        import topv.reference.pipeline as pipeline_module

        original = pipeline_module.token_importance
        pipeline_module.token_importance = lambda *a, **k: -original(*a, **k)
    try:
        cells = evaluate_torch(model, processor, examples, methods=["topv"], keeps=keeps, layer=layer, config=config,
                               progress_every=0)
    finally:
        if invert:
            pipeline_module.token_importance = original
    accs = {c.keep: c.accuracy for c in cells}
    return sum(accs.values()) / len(accs), accs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a validation .jsonl (not the test split)")
    p.add_argument("--keep", default=None, help="comma list (default: 1/3, 2/9, 1/9 of the visual tokens)")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", dest="json_path", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "test" in Path(args.data).name:
        raise SystemExit("refusing to sweep on a test split; pass the validation split")
    import torch

    from topv.evaluation.evaluate import evaluate_torch, load_jsonl
    from topv.evaluation.run import default_keeps
    from topv.reference.loading import model_spec
    from topv.pruning.config import TopVConfig
    from topv.reference.loading import load_model

    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    spec = model_spec(model)
    keeps = [int(k) for k in args.keep.split(",")] if args.keep else default_keeps(spec.num_grid_tokens)
    examples = load_jsonl(args.data, args.limit)
    rows = []
    t0 = time.perf_counter()

    def run(stage, config, invert=False):
        mean, accs = score(model, processor, examples, config, keeps, args.layer, invert)
        rows.append({"stage": stage, "config": config.to_dict(), "inverted": invert, "mean_accuracy": mean,
                     "accuracy": {str(k): v for k, v in accs.items()}})
        log.info("[%s %.0fs] mean %.4f %s  %s%s", stage, time.perf_counter() - t0, mean,
                 " ".join(f"{k}:{v:.3f}" for k, v in accs.items()),
                 {k: v for k, v in config.to_dict().items() if k in ("importance", "feature_distance", "gamma", "epsilon",
                                                                       "recovery_fraction", "beta")},
                 " INVERTED" if invert else "")
        return mean

    baseline = evaluate_torch(model, processor, examples, methods=["none"], keeps=keeps, layer=args.layer, progress_every=0)[0]
    log.info("no pruning: %.4f", baseline.accuracy)
    best = TopVConfig()
    best_score = -1.0
    for importance, distance, gamma in itertools.product(("semi_relaxed", "balanced", "unbalanced", "retention"),
                                                         ("l2", "l2_rms", "cosine"), (0.0, 2.0)):
        cfg = best.replace(importance=importance, feature_distance=distance, gamma=gamma)
        s = run("A", cfg)
        if s > best_score:
            best_score, best_a = s, cfg
    best, best_score = best_a, -1.0
    for gamma, eps in itertools.product((0.0, 0.5, 1.0, 2.0, 4.0, 8.0), (0.05, 0.1, 0.3)):
        cfg = best.replace(gamma=gamma, epsilon=eps)
        s = run("B", cfg)
        if s > best_score:
            best_score, best_b = s, cfg
    best, best_score = best_b, -1.0
    for fraction, beta in itertools.product((0.0, 0.125, 0.25, 0.5), (0.0, 1.0)):
        cfg = best.replace(recovery_fraction=fraction, beta=beta)
        if cfg.alpha == 0 and cfg.beta == 0 and cfg.gamma == 0:
            continue
        s = run("C", cfg)
        if s > best_score:
            best_score, best_c = s, cfg
    run("check", best_c, invert=True)
    result = {"model": args.model, "data": args.data, "n": len(examples), "keeps": keeps, "layer": args.layer,
              "no_pruning_accuracy": baseline.accuracy, "chosen": best_c.to_dict(), "chosen_mean_accuracy": best_score,
              "rows": rows, "seconds": time.perf_counter() - t0}
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    log.info("chosen: %s (mean accuracy %.4f); written %s", best_c.to_json(), best_score, args.json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
