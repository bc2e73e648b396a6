"""Held-out accuracy of a checkpoint on a shapes-VQA split, by greedy generation.

    python -m tools.training.evaluate_shapes --model models/topv-shapes-vqa --data data/shapes-vqa/test.jsonl

Without ``--keep`` every question is answered with Hugging Face ``model.generate(**processor(images=...,
text=prompt, return_tensors="pt"), max_new_tokens=4)`` (greedy) and scored with
:func:`topv.evaluation.answers.answers_match`. With ``--keep N`` the answers come from the PyTorch reference
pipeline (:func:`topv.reference.generate.generate`) with N visual tokens kept after layer ``--layer``
by ``--method`` (topv, fastv, random, uniform).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

log = logging.getLogger("tools.training")


def evaluate(
    model: Any,
    processor: Any,
    records: list[dict[str, Any]],
    *,
    max_new_tokens: int = 4,
    keep: int | None = None,
    layer: int = 2,
    method: str = "topv",
    log_every: int = 0,
) -> dict[str, Any]:
    """Accuracy (overall and per question type) and the predictions, for records from ``read_split``."""
    import torch
    from PIL import Image

    from topv.evaluation.answers import answers_match
    from tools.data.shapes import question_type
    from tools.training.common import chat_prompt

    hits: dict[str, list[int]] = defaultdict(list)
    predictions = []
    model.eval()
    for i, r in enumerate(records):
        image = Image.open(r["image"]).convert("RGB")
        if keep is None:
            inputs = processor(images=image, text=chat_prompt(processor, r["question"]), return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        else:
            from topv.reference.generate import generate

            text = generate(model, processor, image, r["question"], keep=keep, layer=layer, method=method,
                            max_new_tokens=max_new_tokens).text
        ok = answers_match(text, r["answer"])
        qtype = question_type(r["question"])
        hits[qtype].append(int(ok))
        predictions.append({"question": r["question"], "answer": r["answer"], "prediction": text.strip(), "correct": ok, "type": qtype})
        if log_every and (i + 1) % log_every == 0:
            done = [h for v in hits.values() for h in v]
            log.info("%d/%d  accuracy so far %.3f", i + 1, len(records), sum(done) / len(done))
    total = [h for v in hits.values() for h in v]
    return {
        "accuracy": sum(total) / max(1, len(total)),
        "count": len(total),
        "per_type": {k: {"accuracy": sum(v) / len(v), "count": len(v)} for k, v in sorted(hits.items())},
        "predictions": predictions,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.training.evaluate_shapes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--data", required=True, help="split .jsonl")
    p.add_argument("--limit", type=int, default=0, help="first N questions only (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--keep", type=int, default=None, help="visual tokens kept after --layer (default: no pruning)")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--method", default="topv")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the full result (with predictions) here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from tools.data.writer import read_split

    torch.set_num_threads(args.threads)
    model = LlavaForConditionalGeneration.from_pretrained(args.model, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, local_files_only=True)
    records = read_split(args.data)
    if args.limit:
        records = records[: args.limit]
    start = time.time()
    result = evaluate(model, processor, records, max_new_tokens=args.max_new_tokens, keep=args.keep, layer=args.layer,
                      method=args.method, log_every=100)
    result["seconds"] = round(time.time() - start, 1)
    result["model"], result["data"] = str(args.model), str(args.data)
    result["pruning"] = None if args.keep is None else {"keep": args.keep, "layer": args.layer, "method": args.method}
    print(f"accuracy {result['accuracy']:.4f} ({sum(x['correct'] for x in result['predictions'])}/{result['count']}) "
          f"on {args.data}" + ("" if args.keep is None else f" keep {args.keep} layer {args.layer} method {args.method}"))
    for k, v in result["per_type"].items():
        print(f"  {k:12s} {v['accuracy']:.3f}  (n={v['count']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
