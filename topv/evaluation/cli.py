"""topv-eval MODEL_DIR --data FILE.jsonl: accuracy against the keep budget for TopV, FastV, random, uniform.

Data: JSON lines {"image": path relative to the file, "question": str, "answer": str} (an optional
"type" adds a per-type breakdown). Answers are compared after normalization (case, punctuation,
articles, number words). Prints a table; --json and --plot save the result.

--backend ort-cpu exports the model once per keep budget (cached in --work-dir) and evaluates the
exported graphs; it supports the methods that are exported: topv and none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from topv.cli import positive_int, run_cli, setup_logging


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="Hugging Face LLaVA checkpoint folder")
    p.add_argument("--data", required=True, help="JSON-lines file of {image, question, answer}")
    p.add_argument("--methods", default="topv,fastv,random,uniform,none", help="comma list (default: all five)")
    p.add_argument("--keep", type=_ints, default=None, help="keep budgets (default: 1/3, 2/9, 1/9 of the visual tokens)")
    p.add_argument("--layer", type=int, default=2, help="pruning layer K (default 2)")
    p.add_argument("--backend", choices=("torch", "ort-cpu"), default="torch")
    p.add_argument("--config", default=None, metavar="JSON", help="TopV hyperparameters (JSON file or inline object)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N examples")
    p.add_argument("--max-new-tokens", type=positive_int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of the random method")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--work-dir", default="artifacts/eval", help="exports for --backend ort-cpu")
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE")
    p.add_argument("--plot", default=None, metavar="FILE", help="accuracy against budget (PNG)")
    p.add_argument("--predictions", default=None, metavar="FILE", help="write every prediction as JSON lines")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        from topv.evaluation.run import EvalOptions, run_eval
        from topv.export.cli import _topv_config

        options = EvalOptions(
            methods=[m.strip() for m in args.methods.split(",") if m.strip()],
            keeps=args.keep,
            layer=args.layer,
            backend=args.backend,
            config=_topv_config(args.config),
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            threads=args.threads,
            work_dir=Path(args.work_dir),
            predictions=args.predictions,
        )
        result = run_eval(args.model_dir, args.data, options)
        from topv.evaluation.evaluate import plot, table

        print(table(result))
        if args.json_path:
            import json

            Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
            print(f"json: {args.json_path}")
        if args.plot:
            print(f"plot: {plot(result, args.plot)}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
