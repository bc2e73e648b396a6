"""topv-run OUT_DIR --image PATH --prompt TEXT: answer a question about an image with an exported folder.

Streams the answer to stdout. --json prints one object instead: text, token_ids, kept_indices,
timings_ms (preprocess, vision, prefill_head, prune, prefill_tail, each decode step, ttft, total).
"""

from __future__ import annotations

import argparse
import json
import sys

from topv.cli import add_kept_set_argument, device_value, positive_int, run_cli, seed_value, setup_logging

BACKENDS = ("ort-cpu", "ort-cuda", "trt", "torch", "openvino")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder written by topv-export")
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    p.add_argument("--prompt", required=True, help="question about the image")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="default: the export's --max-new-tokens")
    p.add_argument("--backend", choices=BACKENDS, default="ort-cpu", help="default: ort-cpu")
    p.add_argument("--device", type=device_value, default=None,
                   help="cpu, cuda or cuda:N for ort-cuda, trt and torch; cpu, gpu, gpu.N or npu for openvino")
    p.add_argument("--precision", choices=("f32", "bf16", "f16", "auto"), default=None,
                   help="openvino: precision of the graphs after the pruning decision, every graph without pruning (default f32, the tokens of ort-cpu; "
                        "auto: the device's default, bf16 on CPUs with AVX512_BF16 or AMX)")
    p.add_argument("--weights", choices=("int8",), default=None,
                   help="openvino: int8 weights (NNCF) for the graphs after the pruning decision, made once and cached")
    add_kept_set_argument(p, "openvino's --precision/--weights")
    p.add_argument("--low-memory", action="store_true",
                   help="ort-cpu: hold every weight once (no prepacked copies per graph), at some decode speed")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all available)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("--save-kept-map", metavar="PNG", default=None, help="write the image with kept patches highlighted (.png)")
    verify = p.add_mutually_exclusive_group()
    verify.add_argument("--no-verify", action="store_true", help="skip SHA-256 checks of the folder (sizes are still checked)")
    verify.add_argument("--full-verify", action="store_true",
                        help="hash every file even when the cache's stamp says the folder is unchanged since its last hash")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)

    def body() -> int:
        from topv.cli.outputs import check_output_file, png_is_ours
        from topv.runtime.kept_map import save_map
        from topv.runtime.pipeline import Pipeline

        kept_map = None
        if args.save_kept_map:  # checked before any work, so a bad path does not cost a generation
            kept_map = check_output_file(args.save_kept_map, inputs=[args.image, args.out_dir], ours=png_is_ours,
                                         what="--save-kept-map", suffixes=(".png",))
        pipe = Pipeline.load(args.out_dir, args.backend, threads=args.threads, device=args.device,
                             verify_checksums=False if args.no_verify else (True if args.full_verify else "stamp"),
                             precision=args.precision, weights=args.weights, low_memory=args.low_memory,
                             kept_set=args.kept_set)
        kwargs = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
        if args.json:
            result = pipe.generate(args.image, args.prompt, **kwargs)
        else:
            stream = pipe.generate(args.image, args.prompt, stream=True, **kwargs)
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            result = stream.result
        if kept_map:
            save_map(pipe, args.image, result.kept_indices, kept_map)
        if args.json:
            print(json.dumps(result.to_json()))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
