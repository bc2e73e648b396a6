"""Exported pipeline vs the PyTorch reference, token for token, on real questions (greedy, eos ignored).

    .venv/bin/python tools/research/compare_exported.py --model MODEL_DIR --data data/shapes-vqa/test.jsonl \
        --keep all,28 --limit 5 --tokens 32 --work-dir artifacts/compare --json result.json

For each keep value it exports MODEL_DIR (TopV at layer K, validated as usual), then for each of the first
``--limit`` questions compares the exported folder's tokens and kept indices (ort-cpu) with
``topv.generate`` on the same model. Exit status 1 if any differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--keep", default="all")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--work-dir", default="artifacts/compare")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import topv
    from topv.evaluation.evaluate import load_jsonl
    from topv.export.exporter import ExportOptions, export_model
    from topv.reference.loading import load_model
    from topv.runtime.pipeline import Pipeline

    model, processor = load_model(args.model)
    examples = load_jsonl(args.data, args.limit)
    rows = []
    for text in args.keep.split(","):
        keep = None if text == "all" else int(text)
        out = Path(args.work_dir) / f"{Path(args.model).name}-k{text}"
        export_model(args.model, out, ExportOptions(keep=keep, layer=args.layer, max_new_tokens=args.tokens, force=True,
                                                    threads=args.threads))
        pipe = Pipeline.load(out, threads=args.threads)
        for i, ex in enumerate(examples):
            got = pipe.generate(ex.image, ex.question, max_new_tokens=args.tokens, ignore_eos=True)
            want = topv.generate(model, processor, ex.image, ex.question, keep=keep, layer=args.layer,
                                 max_new_tokens=args.tokens, ignore_eos=True)
            same = got.token_ids == want.token_ids and got.kept_indices == want.kept_indices
            rows.append({"keep": keep, "index": i, "question": ex.question, "tokens_equal": got.token_ids == want.token_ids,
                         "kept_equal": got.kept_indices == want.kept_indices, "n_tokens": len(got.token_ids),
                         "text": got.text})
            logging.info("keep=%s q%d %s: %s", text, i, "EQUAL" if same else "DIFFERENT", got.text[:60])
    ok = all(r["tokens_equal"] and r["kept_equal"] for r in rows)
    result = {"model": args.model, "layer": args.layer, "tokens": args.tokens, "ok": ok, "rows": rows}
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{sum(r['tokens_equal'] and r['kept_equal'] for r in rows)}/{len(rows)} generations identical "
          f"({args.tokens} greedy tokens each, eos ignored)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
