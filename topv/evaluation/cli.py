"""topv-eval MODEL_DIR --data FILE.jsonl: accuracy against the keep budget for TopV, FastV, random, uniform.

Data: JSON lines {"image": path relative to the file, "question": str, "answer": str} (an optional
"type" adds a per-type breakdown). Answers are compared after normalization (case, punctuation,
articles, number words). Prints a table; --json and --plot save the result.

--backend ort-cpu or openvino exports the model once per keep budget (cached in --work-dir) and evaluates
the exported graphs; they support the methods that are exported: topv and none. --agreement also runs
every question on ort-cpu in float32 and reports how far the chosen backend and precision drift from it
(logits cosine and largest error under teacher forcing, identical greedy tokens, identical kept tokens):
  topv-eval models/topv-shapes-vqa --data data/shapes-vqa/val.jsonl --methods topv --keep 16 \
      --backend openvino --precision bf16 --weights int8 --agreement
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from topv.cli import add_kept_set_argument, options_from_args, positive_int, run_cli, seed_value, setup_logging, topv_config


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="Hugging Face checkpoint folder (LLaVA or Qwen2-VL)")
    p.add_argument("--data", required=True, help="JSON-lines file of {image, question, answer}")
    p.add_argument("--methods", default="topv,fastv,random,uniform,none", help="comma list (default: all five)")
    p.add_argument("--keep", type=_ints, default=None, help="keep budgets (default: 1/3, 2/9, 1/9 of the visual tokens)")
    p.add_argument("--layer", type=int, default=2, help="pruning layer K (default 2)")
    p.add_argument("--backend", choices=("torch", "ort-cpu", "openvino"), default="torch")
    p.add_argument("--precision", choices=("f32", "bf16", "f16", "auto"), default=None,
                   help="openvino: inference precision after the pruning decision (default f32)")
    p.add_argument("--weights", choices=("int8",), default=None, help="openvino: int8 weights (NNCF) after the pruning decision")
    add_kept_set_argument(p, "openvino's --precision/--weights")
    p.add_argument("--agreement", action="store_true", help="compare every answer's logits with ort-cpu float32 (exported backends)")
    p.add_argument("--config", default=None, metavar="JSON", help="TopV hyperparameters (JSON file or inline object)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N examples")
    p.add_argument("--max-new-tokens", type=positive_int, default=8)
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the random method")
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
        from topv.cli.outputs import check_output_file, check_result_outputs, predictions_are_ours, write_json
        from topv.evaluation.run import EvalOptions, run_eval

        inputs = [args.data, args.model_dir]
        json_path, plot_path = check_result_outputs(args, inputs)
        if args.predictions:
            check_output_file(args.predictions, inputs=inputs, ours=predictions_are_ours, what="--predictions")

        options = options_from_args(EvalOptions, args, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
                                    keeps=args.keep, config=topv_config(args.config), work_dir=Path(args.work_dir))
        result = run_eval(args.model_dir, args.data, options)
        from topv.evaluation.evaluate import plot, table

        print(table(result))
        if json_path:
            print(f"json: {write_json(json_path, result)}")
        if plot_path:
            print(f"plot: {plot(result, plot_path)}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
