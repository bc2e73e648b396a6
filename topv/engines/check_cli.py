"""topv-check OUT_DIR --target tensorrt: will TensorRT build these graphs? A static report, no TensorRT needed.

For each graph of an export folder: every operator (and its opset) against the TensorRT 10.x ONNX parser's
operator table (onnx-tensorrt docs/operators.md) with the restrictions that matter for topv's graphs,
data types (no float64 I/O, types TensorRT has no tensors for), dynamic dimensions (only the manifest's
declared axes sequence / kept_sequence), the opset range and the external weights (present, inside the
folder, readable, of the right size).

Exit status: 0 when nothing was found that keeps the graphs from building, 1 when something will not
build (with --strict: also on warnings), 2 when the folder cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

from topv.cli import run_cli, setup_logging

TARGETS = ("tensorrt",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder written by topv-export")
    p.add_argument("--target", choices=TARGETS, default="tensorrt", help="what to check against (default: tensorrt)")
    p.add_argument("--trt-version", metavar="10.x", default=None,
                   help="TensorRT release to check against (default: the installed TensorRT, else 10.0, the oldest "
                        "10.x release topv has rules for)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    p.add_argument("-q", "--quiet", action="store_true", help="leave out informational notes in the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)

    def body() -> int:
        from topv.engines.check import check_folder

        report = check_folder(args.out_dir, trt_version=args.trt_version)
        if args.json:
            data = report.to_json()
            data["strict"] = args.strict
            data["passed"] = report.passed(strict=args.strict)
            print(json.dumps(data, indent=2))
        else:
            print(report.format_text(verbose=not args.quiet))
        return 0 if report.passed(strict=args.strict) else 1

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
