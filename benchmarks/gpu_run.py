"""The GPU run, in tiers ordered by value, each writing its JSON under OUT as soon as it finishes.

    python3 benchmarks/gpu_run.py --out $OUT                      # on the GPU machine (benchmarks/gpu.sh)
    python3 benchmarks/gpu_run.py --out /tmp/dry --device cpu --dry-run    # the CPU dry run (tests)

Tier 1, correctness: random-weight models of the ``tiny`` and ``llava-edge-1b`` shapes in fp16, exported on the
device; ``ort-cuda`` (with and without the decode step's CUDA graph) against ``ort-cpu`` and ``torch`` on the same
export: 32 greedy tokens (eos ignored) and the kept indices, with the first step where tokens differ.
Tier 2: ``topv-bench`` on ``llava-edge-1b`` shapes, fp16, keep all and 64, ``ort-cuda`` and ``torch``, with
transformers eager and static+compiled as baselines in the same run.
Tier 3: the same on ``llava-1.5-7b`` shapes, if the clock allows (``--deadline``).
A short table of every tier's result is printed last. ``--dry-run`` uses the tiny shape everywhere and drops
the CUDA-only baselines, so the script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes only, no CUDA-only baselines (CPU check)")
    p.add_argument("--deadline", type=float, default=470.0, help="seconds after which no new tier starts")
    p.add_argument("--work", default="/tmp/topv-gpu")
    return p


def _agreement(a: list[int], b: list[int]) -> dict:
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return {"equal": a == b, "first_difference": first, "tokens": len(a)}


def _options(shape: str, args: argparse.Namespace, keeps: list) -> "BenchOptions":
    from topv.profiling.bench import BenchOptions

    return BenchOptions(
        backends=["ort-cuda"] if args.dry_run else ["ort-cuda", "torch"], keeps=keeps,
        prompt_tokens=None if args.dry_run else 640, new_tokens=32, repeats=2 if args.dry_run else 5,
        warmup=1 if args.dry_run else 2, baselines=["hf"] if args.dry_run else ["hf", "hf-static"],
        device="cpu" if args.dry_run else args.device, work_dir=Path(args.work), model_shape=shape,
        dtype="fp32" if args.dry_run else "fp16")


def correctness(shape: str, keep: int, args: argparse.Namespace) -> dict:
    """One export of ``shape`` (the one tier 2 measures, so it is reused), then every backend on the same request."""
    from topv.profiling.bench import _export_for, prepare
    from topv.runtime.pipeline import Pipeline

    options = _options(shape, args, [None, keep])
    t0 = time.perf_counter()
    inputs = prepare(None, options)
    built = time.perf_counter() - t0
    folder = _export_for(inputs.source, keep, options, inputs.max_prompt)
    exported = time.perf_counter() - t0 - built
    runs = {}
    backends = [("ort-cpu", None), ("torch", None), ("ort-cuda", False)] + ([] if args.dry_run else [("ort-cuda", True)])
    for backend, graph in backends:
        device = None if backend == "ort-cpu" else options.device
        pipe = Pipeline.load(folder, backend, device=device, cuda_graph=graph, verify_checksums=False)
        result = pipe.generate(inputs.image, inputs.prompt, max_new_tokens=32, ignore_eos=True)
        runs[f"{backend}{'+graph' if graph else ''}"] = {"tokens": result.token_ids, "kept": result.kept_indices,
                                                        "ttft_ms": result.timings_ms()["ttft"]}
        del pipe
    ref = runs["ort-cpu"]
    return {"shape": shape, "dtype": options.dtype, "keep": keep, "export": str(folder), "seconds_build": built,
            "seconds_export": exported, "validation": json.loads((folder / "validation.json").read_text())["generation"],
            "runs": runs, "agreement_vs_ort_cpu": {k: {**_agreement(ref["tokens"], v["tokens"]),
                                                      "kept_equal": v["kept"] == ref["kept"]} for k, v in runs.items()}}


def bench(shape: str, args: argparse.Namespace) -> dict:
    from topv.profiling.bench import run_bench

    return run_bench(None, _options(shape, args, [None, 4 if args.dry_run else 64]))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tiers = [("1-correctness-tiny", lambda: correctness("tiny", 4, args))]
    if not args.dry_run:
        tiers += [("1-correctness-edge", lambda: correctness("llava-edge-1b", 64, args)),
                  ("2-bench-edge", lambda: bench("llava-edge-1b", args)),
                  ("3-bench-7b", lambda: bench("llava-1.5-7b", args))]
    else:
        tiers += [("2-bench-tiny", lambda: bench("tiny", args))]
    summary = []
    for name, run in tiers:
        if time.perf_counter() - start > args.deadline:
            summary.append(f"{name}: skipped (deadline {args.deadline:.0f} s reached)")
            continue
        t0 = time.perf_counter()
        try:
            result = run()
            result["seconds"] = time.perf_counter() - t0
            (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
            summary.append(_line(name, result))
        except Exception as exc:  # noqa: BLE001 - a failed tier is recorded and the next one still runs
            (out / f"{name}.error.txt").write_text(traceback.format_exc())
            summary.append(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s: {type(exc).__name__}: {exc}"[:300])
        print(summary[-1], flush=True)
    print("\n=== GPU run summary ===\n" + "\n".join(summary))
    return 0 if all("FAILED" not in s for s in summary) else 1


def _line(name: str, result: dict) -> str:
    if "agreement_vs_ort_cpu" in result:
        parts = [f"{k}: {'=' if v['equal'] else 'differs at ' + str(v['first_difference'])}"
                 f"{'' if v['kept_equal'] else ' KEPT DIFFER'}" for k, v in result["agreement_vs_ort_cpu"].items()]
        return f"{name} ({result['seconds']:.0f} s): tokens vs ort-cpu: " + "; ".join(parts)
    from topv.profiling.bench import table

    return f"{name} ({result['seconds']:.0f} s):\n" + table(result)


if __name__ == "__main__":
    sys.exit(main())
