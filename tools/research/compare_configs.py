"""Score a few named TopV configurations on a VALIDATION split of any model: accuracy per keep budget and
relative to no pruning. Used to check the bundled model's sweep winner on a second model before making
it the default (docs/accuracy.md, "Choosing the defaults").

    .venv/bin/python tools/research/compare_configs.py --model /tmp/rt/final --data data/shapes-vqa/val.jsonl \
        --limit 200 --max-new-tokens 3 --json tools/research/results/defaults-check-realistic-val.json \
        importance=semi_relaxed,feature_distance=l2,gamma=0.5,epsilon=0.05 \
        importance=retention,feature_distance=l2,gamma=0,epsilon=0.05 \
        importance=retention,feature_distance=l2_rms,gamma=0,epsilon=0.05

Each positional argument is ``field=value,...`` changes to ``TopVConfig()``'s fields. Refuses test splits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_changes(text: str) -> dict:
    """``"importance=retention,gamma=0"`` -> ``{"importance": "retention", "gamma": 0.0}``."""
    from topv.pruning.config import TopVConfig

    fields = TopVConfig.__dataclass_fields__
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown TopVConfig field {key!r}; known: {', '.join(fields)}")
        kind = type(getattr(TopVConfig(), key))
        try:
            out[key] = kind(value) if kind in (int, float) else value
        except ValueError:
            raise SystemExit(f"{key}={value!r}: expected a{'n integer' if kind is int else ' number'}") from None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="field=value,... changes to the TopVConfig defaults")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a validation .jsonl (not the test split)")
    p.add_argument("--keep", default=None, help="comma list (default: 1/3, 2/9, 1/9 of the visual tokens)")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", dest="json_path", required=True)
    args = p.parse_args(argv)
    if "test" in Path(args.data).name:
        raise SystemExit("refusing to compare configurations on a test split; pass the validation split")
    from topv.errors import ConfigError
    from topv.pruning.config import TopVConfig

    configs = []
    for text in args.configs:  # every config is validated before the model is loaded
        try:
            configs.append(TopVConfig().replace(**parse_changes(text)))
        except ConfigError as exc:
            raise SystemExit(f"{text}: {exc}") from None

    import torch

    from topv.evaluation.evaluate import evaluate_torch, load_jsonl
    from topv.evaluation.run import default_keeps
    from topv.reference.loading import load_model, model_spec

    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    keeps = [int(k) for k in args.keep.split(",")] if args.keep else default_keeps(model_spec(model).num_grid_tokens)
    examples = load_jsonl(args.data, args.limit)
    t0 = time.perf_counter()
    common = dict(keeps=keeps, layer=args.layer, progress_every=0, max_new_tokens=args.max_new_tokens)
    none = evaluate_torch(model, processor, examples, methods=["none"], **common)[0].accuracy
    print(f"none: {none:.4f}", flush=True)
    rows = []
    for text, config in zip(args.configs, configs):
        cells = evaluate_torch(model, processor, examples, methods=["topv"], config=config, **common)
        accuracy = {str(c.keep): c.accuracy for c in cells}
        mean = sum(accuracy.values()) / len(accuracy)
        rows.append({"changes": text, "config": config.to_dict(), "accuracy": accuracy, "mean_accuracy": mean,
                     "relative": mean / none if none else None})
        print(f"{text}: " + " ".join(f"{k}:{v:.3f}" for k, v in accuracy.items()) + f"  mean {mean:.4f}"
              + (f" ({mean / none:.1%} of none)" if none else ""), flush=True)
    result = {"model": args.model, "data": args.data, "n": len(examples), "keeps": keeps, "layer": args.layer,
              "max_new_tokens": args.max_new_tokens, "no_pruning_accuracy": none, "rows": rows,
              "seconds": time.perf_counter() - t0}
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
