"""topv-run OUT_DIR --image PATH --prompt TEXT: answer a question about an image with an exported folder.

Streams the answer to stdout. --json prints one object instead: text, token_ids, kept_indices,
timings_ms (vision, prefill_head, prune, prefill_tail, each decode step, ttft, total).
"""

from __future__ import annotations

import argparse
import json
import sys

from topv.cli import positive_int, run_cli, setup_logging

BACKENDS = ("ort-cpu", "ort-cuda", "trt", "torch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder written by topv-export")
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    p.add_argument("--prompt", required=True, help="question about the image")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="default: the export's --max-new-tokens")
    p.add_argument("--backend", choices=BACKENDS, default="ort-cpu", help="default: ort-cpu")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all available)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("--save-kept-map", metavar="PNG", default=None, help="write the image with kept patches highlighted")
    p.add_argument("--no-verify", action="store_true", help="skip SHA-256 checks of the folder (sizes are still checked)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)

    def body() -> int:
        from topv.runtime.pipeline import Pipeline

        pipe = Pipeline.load(args.out_dir, args.backend, threads=args.threads, verify_checksums=not args.no_verify)
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
        if args.save_kept_map:
            save_map(pipe, args.image, result.kept_indices, args.save_kept_map)
        if args.json:
            print(json.dumps(result.to_json()))
        return 0

    return run_cli(body)


def save_map(pipe, image, kept_indices, path):
    """Write the kept-token map of a generation; returns the PNG path."""
    from topv.inputs import encode
    from topv.runtime.kept_map import save_kept_map

    spec = pipe.manifest["model"]["spec"]
    ip = pipe.processor.image_processor
    pixel_values = encode(pipe.processor, image, "x", return_tensors="np")["pixel_values"]
    return save_kept_map(path, pixel_values, kept_indices, grid_hw=tuple(spec["grid_hw"]), extra=spec["num_extra_visual_tokens"],
                  mean=ip.image_mean, std=ip.image_std)


if __name__ == "__main__":
    sys.exit(main())
