"""topv-check OUT_DIR --target tensorrt: will TensorRT build these graphs? A static report, no TensorRT needed.

For each graph of an export folder: every op type against the ones topv emits and has checked against the
TensorRT 10.x ONNX parser, the rules that matter (TopK's K constant and below 3840, constant axes, no
float64, dynamic dimensions only on the declared axes sequence / kept_sequence, the opset range) and
the external weights (inside the folder, present, long enough). Each problem names the node and its op.

Exit status: 0 when every graph passes, 1 when one will not build, 2 when the folder cannot be read.
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
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)

    def body() -> int:
        from topv.engines.check import check_folder

        report = check_folder(args.out_dir)
        print(json.dumps(report.to_json(), indent=2) if args.json else report.format_text())
        return 0 if report.ok else 1

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
