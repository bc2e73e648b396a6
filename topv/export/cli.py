"""topv-export MODEL_DIR OUT_DIR: split a Hugging Face VLM checkpoint into ONNX graphs with TopV pruning inside.

Writes vision, prefill (layers 0..K), the pruning graph (cost, Sinkhorn, selection, gather; static keep
count), prefill (layers K+1..), and a decode step over a static KV cache sized for the pruned length,
plus manifest.json, shared weights, the processor and a validation report. The export checks itself
against the PyTorch reference and fails with the numbers if a graph does not match.
"""

from __future__ import annotations

import argparse
import sys

from topv.cli import (add_kept_set_argument, device_value, image_size, keep_value, options_from_args, positive_int, run_cli,
                      setup_logging, topv_config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="Hugging Face checkpoint folder (config.json, weights, processor files): LLaVA or Qwen2-VL")
    p.add_argument("out_dir", help="output folder (written atomically; only a topv export is ever replaced, with --force)")
    p.add_argument("--keep", type=keep_value, default=None, metavar="N|all",
                   help="visual tokens to keep after the pruning layer (default: all, no pruning)")
    p.add_argument("--layer", type=int, default=2, metavar="K",
                   help="pruning layer, 0-indexed: layers 0..K see all tokens (default: 2; ignored without pruning)")
    p.add_argument("--image-size", type=image_size, default=None, metavar="HxW",
                   help="input resolution for models whose visual token count depends on it (Qwen2-VL; multiples of 28); "
                        "default: the checkpoint processor's")
    p.add_argument("--max-prompt-tokens", type=positive_int, default=None, metavar="P",
                   help="longest prompt incl. visual tokens; fixes the static KV cache (default: visual tokens + 64)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="M",
                   help="new tokens the static KV cache has room for (default: 32)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="weights/activations (default: fp32)")
    p.add_argument("--opset", type=int, default=17, metavar="O", help="ONNX opset (default: 17)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8 weight MatMuls for CPU deployment (ONNX Runtime dynamic quantization; not for TensorRT)")
    add_kept_set_argument(p, "--quantize int8")
    p.add_argument("--config", metavar="JSON", default=None,
                   help="TopV hyperparameters as a JSON file or inline JSON object (fields of topv.TopVConfig)")
    p.add_argument("--sample-image", metavar="PATH", default=None, help="image used to trace and validate")
    p.add_argument("--sample-prompt", metavar="TEXT", default=None, help="prompt used to trace and validate")
    p.add_argument("--validate-tokens", type=int, default=8, metavar="N",
                   help="greedy tokens compared with the PyTorch reference (0: skip; default: 8)")
    p.add_argument("--validate", choices=("full", "graphs", "none"), default="full",
                   help="full (default): every graph against its PyTorch module on ONNX Runtime, the modules against "
                        "transformers, and a generation through the export against the reference; graphs: all but the "
                        "generation; none: structural checks only. The PyTorch model is released before ONNX Runtime "
                        "maps the weights: peak memory is about the weights once plus activations (docs/benchmarks.md)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for validation")
    p.add_argument("--device", type=device_value, default="cpu", help="trace and validate on cpu (default) or cuda[:i]")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it is a topv export")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from topv.export.exporter import DEFAULT_SAMPLE_PROMPT, ExportOptions, export_model

        options = options_from_args(ExportOptions, args, config=topv_config(args.config),
                                    sample_prompt=args.sample_prompt or DEFAULT_SAMPLE_PROMPT)
        out = export_model(args.model_dir, args.out_dir, options)
        print(out)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
