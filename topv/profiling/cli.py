"""topv-bench [OUT_DIR]: latency and memory per stage, per keep budget, next to transformers.

Examples:
  topv-bench out/llava --keep-sweep all,192,128,64 --baseline hf --json bench.json --plot bench.png
  topv-bench --model-shape cpu-bench --keep-sweep all,64 --prompt-tokens 616 --baseline hf
  topv-bench --model-shape cpu-bench --keep-sweep 64 --backend ort-cpu,openvino,openvino:bf16:int8 --isolate
Warm-up runs are separate from measured runs; stages are timed with device synchronization.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from topv.cli import (add_kept_set_argument, device_value, image_size, keep_value, options_from_args, positive_int, run_cli,
                      setup_logging)


def _keeps(text: str):
    return [keep_value(t) for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", default=None, help="a topv-export folder (its source checkpoint is used for sweeps)")
    p.add_argument("--model-shape", default=None,
                   help="benchmark a random-weight model of a real architecture: tiny, cpu-bench, llava-edge-1b, llava-1.5-7b, "
                        "qwen2.5-vl-3b, qwen2.5-vl-7b")
    p.add_argument("--backend", type=_names, default=["ort-cpu"],
                   help="comma list of ort-cpu, ort-cuda, trt, torch, openvino, each with optional :options: "
                        "openvino:bf16 (or :f16, :auto), openvino:bf16:int8, ort-cpu:low-memory")
    p.add_argument("--isolate", action="store_true",
                   help="measure each export and backend in its own process, so its peak RSS is its own")
    p.add_argument("--keep-sweep", type=_keeps, default=None, metavar="LIST", help="e.g. all,192,128,64 (one export each)")
    p.add_argument("--prompt-tokens", type=positive_int, default=None, help="prompt length incl. visual tokens")
    p.add_argument("--new-tokens", type=positive_int, default=32, help="tokens generated per run (eos ignored)")
    p.add_argument("--repeats", type=positive_int, default=5, help="measured runs (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up runs, not measured (default 2)")
    p.add_argument("--baseline", type=_names, default=[], help="hf and/or hf-static: transformers on the same inputs")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="for exports made by the sweep")
    p.add_argument("--quantize", type=_names, default=["none"],
                   help="comma list of none and/or int8 (int8 weight MatMuls, ort-cpu only); one export per entry")
    add_kept_set_argument(p, "--quantize int8")
    p.add_argument("--layer", type=int, default=2, help="pruning layer K for exports made by the sweep")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--device", type=device_value, default=None, help="cpu, cuda or cuda:N")
    p.add_argument("--image", default=None, help="image to use (default: a generated scene)")
    p.add_argument("--image-size", type=image_size, default=None, metavar="HxW",
                   help="input resolution for Qwen2-VL models (multiples of 28; default: the processor's, capped at 896x896)")
    p.add_argument("--work-dir", default="artifacts/bench", help="cache for random models and sweep exports")
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write the full result as JSON")
    p.add_argument("--plot", default=None, metavar="FILE", help="write the latency breakdown and memory bars (PNG)")
    p.add_argument("--op-profile", default=None, metavar="DIR",
                   help="after the timed runs, profile one request per export on each ONNX Runtime backend: per-node "
                        "traces, operator time per graph, provider fallbacks and Memcpy nodes (DIR/<run>/profile.json, .png)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        from topv.cli.outputs import check_result_outputs, write_json
        from topv.profiling.bench import BenchOptions, run_bench, table

        json_path, plot_path = check_result_outputs(args, [args.out_dir, args.image])
        op_profile = None
        if args.op_profile:
            from topv.profiling.op_profile import prepare_profile_dir

            op_profile = prepare_profile_dir(args.op_profile, [args.out_dir, args.image])

        options = options_from_args(BenchOptions, args, backends=args.backend, keeps=args.keep_sweep, baselines=args.baseline,
                                    work_dir=Path(args.work_dir), quantize=[None if q == "none" else q for q in args.quantize],
                                    op_profile=op_profile)
        result = run_bench(args.out_dir, options)
        print(table(result))
        for label, prof in result.get("op_profiles", {}).items():
            print(f"op profile {label}: {prof['folder']}/profile.json ({prof['fallback_nodes']} provider fallbacks, "
                  f"{prof['memcpy_nodes_per_request']:.0f} Memcpy nodes per request)")
        if json_path:
            print(f"json: {write_json(json_path, result)}")
        if plot_path:
            from topv.profiling.plot import plot_bench

            print(f"plot: {plot_bench(result, plot_path)}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
