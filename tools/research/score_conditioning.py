"""Does TopV's well-conditioned key keep the same tokens as the score it replaced? On a shapes-VQA split, for each
question and keep budget: the kept set of the previous ``balanced_retention`` score (``log P_ii / a_i`` =
``diag(log K) + f + g``) and of today's key (the log-odds of the retained share), each from a float64 solve of the
product's float32 cost, and from the float32 solve the product runs; then accuracy with today's kept sets and with
the previous score's float64 ones (answers regenerated only where the sets differ: same kept set, same answer).

    .venv/bin/python tools/research/score_conditioning.py --model models/topv-shapes-vqa \
        --data data/shapes-vqa/val.jsonl --keep 48,32,16 --json tools/research/results/score-conditioning-shapes-val.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def rankings(source, target, grid_hw, config):
    """``{"old64", "new64", "old32", "new32"}``: the previous score (``log P_ii / a_i = diag(log K) + f + g``) and
    today's key, each from a float64 and a float32 solve of the product's (float32) cost of these layer-K states."""
    from topv.pruning.cost import transport_cost
    from topv.pruning.importance import _diagonal, importance_logits
    from topv.pruning.sinkhorn import sinkhorn_potentials

    cost = transport_cost(source, target, grid_hw, config)
    out = {}
    for bits, c in (("64", cost.double()), ("32", cost)):
        log_k, f, g = sinkhorn_potentials(c, None, None, config.epsilon, config.iterations)
        out["old" + bits] = _diagonal(log_k) + f + g
        out["new" + bits] = importance_logits(c, config)
    return out


def _answer(pipe, processor, inputs, kept, max_new_tokens, stops):
    import torch

    from topv.reference.generate import decode_tokens
    from topv.sampling import SamplingConfig, TokenSampler

    with torch.no_grad():
        state = pipe.prefill(torch.from_numpy(inputs["input_ids"]), inputs, kept=kept)
        tokens = list(decode_tokens(pipe, state, max_new_tokens, TokenSampler(SamplingConfig()), stops))
    return processor.tokenizer.decode(tokens, skip_special_tokens=True), state


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--keep", default="48,32,16")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args(argv)

    import torch

    from topv.evaluation.answers import answers_match
    from topv.evaluation.evaluate import load_jsonl
    from topv.pruning.config import TopVConfig
    from topv.pruning.selection import KEY_NEAR_TIE, boundary_margin, select_tokens
    from topv.reference.loading import load_model, model_family
    from topv.inputs import image_span
    from topv.reference.pipeline import ReferencePipeline
    from topv.sampling import stop_ids

    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    processor = model_family(model).wrap_processor(processor)
    config = TopVConfig()
    stops = stop_ids(getattr(model.generation_config, "eos_token_id", None))
    examples = load_jsonl(args.data, limit=args.limit)
    budgets = [int(k) for k in args.keep.split(",")]
    rows = {k: {"same_new64_old64": 0, "same_new32_old64": 0, "same_old32_old64": 0, "correct_new": 0,
                "correct_old64": 0, "differ": [], "min_margin_new32": float("inf"), "min_margin_old32": float("inf"),
                "near_ties_new32": 0}
            for k in budgets}
    t0 = time.time()
    for n, ex in enumerate(examples):
        inputs = processor.encode(ex.image, ex.question)
        for keep in budgets:
            pipe = ReferencePipeline(model, layer=args.layer, keep=keep, config=config)
            captured = {}
            select = pipe.select
            pipe.select = lambda c, *a, **k: captured.update(c) or select(c, *a, **k)
            text, state = _answer(pipe, processor, inputs, None, args.max_new_tokens, stops)
            spec = model_family(model).request_spec(pipe.spec, inputs)
            extra = spec.num_extra_visual_tokens
            lo = image_span(inputs["input_ids"][0].tolist(), spec.image_token_id, spec.num_visual_tokens) + extra
            hi = lo + spec.num_grid_tokens
            keys = rankings(captured["source"][0, lo:hi], captured["target"][0, lo:hi], spec.grid_hw, config)
            sets = {name: sorted(int(i) for i in select_tokens(key, keep, config)) for name, key in keys.items()}
            row = rows[keep]
            assert sets["new32"] == [i - extra for i in state.kept_indices[extra:]], "the pipeline ranks the float32 key"
            row["same_new64_old64"] += sets["new64"] == sets["old64"]
            row["same_new32_old64"] += sets["new32"] == sets["old64"]
            row["same_old32_old64"] += sets["old32"] == sets["old64"]
            margin = boundary_margin(keys["new32"], keep, config)
            row["min_margin_new32"] = min(row["min_margin_new32"], margin)
            row["near_ties_new32"] += margin < KEY_NEAR_TIE  # rounding on some runtime could swap its boundary tokens
            row["min_margin_old32"] = min(row["min_margin_old32"], boundary_margin(keys["old32"], keep, config))
            row["correct_new"] += answers_match(text, ex.answer)
            if sets["old64"] != sets["new32"]:
                kept = list(range(extra)) + [extra + i for i in sets["old64"]]
                text = _answer(pipe, processor, inputs, kept, args.max_new_tokens, stops)[0]
                row["differ"].append(n)
            row["correct_old64"] += answers_match(text, ex.answer)
        if (n + 1) % 25 == 0:
            print(f"{n + 1}/{len(examples)} questions, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    for row in rows.values():
        row["accuracy_new"], row["accuracy_old64"] = row["correct_new"] / len(examples), row["correct_old64"] / len(examples)
    result = {"model": args.model, "key_near_tie": KEY_NEAR_TIE, "data": args.data, "questions": len(examples), "layer": args.layer,
              "config": config.to_dict(),
              "budgets": {str(k): v for k, v in rows.items()}, "seconds": round(time.time() - t0, 1)}
    text = json.dumps(result, indent=1)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
