"""topv-build OUT_DIR: build a TensorRT engine for every graph of an exported folder, on this GPU.

Writes <graph>.engine next to each <graph>.onnx and engines.json (TensorRT version, GPU and compute
capability, precision, optimization profiles, build time and size per engine, peak host and device
memory of the build). Engines only run with the TensorRT release and the GPU model that built them;
topv-run --backend trt refuses others. Existing engines are kept unless --force is given.

Precision: an fp32 export builds fp16 engines by default (--precision bf16|fp32 to change it); the graphs that
decide the kept tokens (vision, prefill_head, prune) stay fp32 unless --kept-set follow (prune always does). An
fp16 export is built strongly typed from its own types.

Needs the tensorrt Python package (>= 10). Check the folder without it: topv-check OUT_DIR --target tensorrt.
"""

from __future__ import annotations

import argparse
import sys

from topv.cli import add_kept_set_argument, options_from_args, positive_int, run_cli, setup_logging

PRECISIONS = ("fp16", "bf16", "fp32")


def _gib(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GiB, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of GiB, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder written by topv-export")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="engine precision for an fp32 export (default: fp16); fp16 exports are built from their own types")
    add_kept_set_argument(p, "--precision fp16/bf16 (fp32 exports)")
    p.add_argument("--workspace", type=_gib, default=None, metavar="GiB",
                   help="limit TensorRT's workspace memory pool (default: TensorRT's, the whole device memory); "
                        "lower it on 8-16 GB Jetsons")
    p.add_argument("--timing-cache", metavar="FILE", default=None,
                   help="load the builder's timing cache from FILE if it exists and save it there afterwards "
                        "(rebuilds for the same GPU and TensorRT get faster)")
    p.add_argument("--force", action="store_true", help="replace existing engines and engines.json")
    p.add_argument("--opt-prompt-tokens", type=positive_int, default=None, metavar="N",
                   help="prompt length (visual tokens included) the prefill profiles are tuned for "
                        "(default: visual tokens + half the text budget)")
    p.add_argument("--opt-level", type=int, default=None, choices=range(6), metavar="0-5",
                   help="builder optimization level (default: TensorRT's, 3; lower builds faster with less memory)")
    p.add_argument("--device", type=int, default=0, metavar="N", help="CUDA device to build on (default: 0)")
    p.add_argument("--no-check", action="store_true", help="skip the static check (topv-check) before building")
    p.add_argument("--no-verify", action="store_true", help="skip the SHA-256 checks of the export (sizes are still checked)")
    p.add_argument("-v", "--verbose", action="store_true", help="TensorRT's own info messages too")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_summary(result, folder) -> str:
    """A table of the built engines and the build's peak memory."""
    rows = [("graph", "precision", "profile", "build s", "size", "peak host RSS", "peak device used")]
    for graph, rec in result.engines.items():
        prof = rec.profile
        if prof.get("dynamic"):
            ranges = []
            for name, r in prof["inputs"].items():
                if r["min"] != r["max"]:
                    dims = [f"{lo}..{opt}..{hi}" if lo != hi else str(lo) for lo, opt, hi in zip(r["min"], r["opt"], r["max"])]
                    ranges.append(f"{name}[{','.join(dims)}]")
            prof_text = " ".join(ranges[:1]) + (" ..." if len(ranges) > 1 else "")
        else:
            prof_text = "static"
        rows.append((graph, rec.precision, prof_text, f"{rec.build_seconds:.1f}", _size(rec.bytes),
                     _size(rec.peak_host_rss_bytes), _size(rec.peak_device_used_bytes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    mem = result.peak_memory
    lines += [
        "",
        f"TensorRT {result.tensorrt_version} on {result.gpu.name} (compute capability {result.gpu.compute_capability}); "
        f"{result.total_build_seconds:.1f} s in all",
        f"peak memory: host RSS {_size(mem.get('host_rss_bytes'))} ({mem.get('host_method')}); device used "
        + (
            f"{_size(mem.get('device_used_bytes'))}, {_size(mem.get('device_baseline_bytes'))} of it before the build "
            if mem.get("device_used_bytes") is not None
            else "not measured "
        )
        + f"({mem.get('device_method')})",
        f"wrote {folder}/engines.json",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)

    def body() -> int:
        from topv.engines.build import BuildOptions, build_engines

        options = options_from_args(BuildOptions, args, workspace_gib=args.workspace, optimization_level=args.opt_level,
                                    verify_checksums=not args.no_verify, static_check=not args.no_check)
        result = build_engines(args.out_dir, options)
        print(format_summary(result, args.out_dir))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
