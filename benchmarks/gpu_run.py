"""The GPU run, in tiers ordered by value, each writing its JSON under OUT as soon as it finishes.

    python3 benchmarks/gpu_run.py --out $OUT                      # on the GPU machine (benchmarks/gpu.sh)
    python3 benchmarks/gpu_run.py --out /tmp/dry --device cpu --dry-run    # the CPU dry run (tests)

Tier 1, correctness: random-weight models of the ``tiny`` and ``llava-edge-1b`` shapes in fp16, exported on the
device; ``ort-cuda`` (with and without the decode step's CUDA graph) against ``ort-cpu`` and ``torch`` on the same
export: 32 greedy tokens (eos ignored) and the kept indices, with the first step where tokens differ. Then the
operator profile of that export on ``ort-cuda`` (ONNX Runtime's per-node trace and, on CUDA, the device kernels
under torch's profiler): where the time goes, nodes that fell back to the CPU provider, Memcpy nodes.
Tier 2: ``topv-bench`` on ``llava-edge-1b`` shapes, fp16, keep all and 64, ``ort-cuda`` and ``torch``, with
transformers eager and static+compiled as baselines in the same run.
Tier 3: the same on ``llava-1.5-7b`` shapes, if the clock allows (``--deadline``).
A short table of every tier's result is printed last. ``--dry-run`` uses the tiny shape everywhere and drops
the CUDA-only baselines, so the script cannot rot between GPU sessions. A preflight checks the libraries first
(exit 2 naming what is missing). Tier 2 and 3 save ``<tier>.partial.json`` after every measured run, so a
command cut short keeps the runs it finished; the large traces stay in ``--work``, only summaries go to OUT.
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
    p.add_argument("--dtype", choices=("fp16", "fp32"), default=None, help="default fp16, fp32 with --dry-run")
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
        dtype=args.dtype or ("fp32" if args.dry_run else "fp16"))


def preflight(args: argparse.Namespace) -> list[str]:
    """What the run needs and this machine lacks (a minute saved is a minute of GPU time)."""
    import importlib.util

    missing = [m for m in ("numpy", "torch", "transformers", "onnx", "onnxruntime", "PIL")
               if importlib.util.find_spec(m) is None]
    if missing or args.dry_run:
        return [f"python module {m} (PIL: carry the pillow wheel with the onnxruntime-gpu parts, docs/gpu.md)"
                for m in missing]
    import torch  # first: its CUDA libraries are then loaded for ONNX Runtime's CUDA provider

    import onnxruntime
    from onnx import TensorProto, helper

    problems = [] if torch.cuda.is_available() else ["torch sees no CUDA device"]
    getattr(onnxruntime, "preload_dlls", lambda: None)()
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return problems + [f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider (onnxruntime-gpu not installed?)"]
    vec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "abc"]  # a one-node graph on the provider
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "probe", vec[:2], vec[2:]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    if session.get_providers()[:1] != ["CUDAExecutionProvider"]:
        problems.append(f"ONNX Runtime's CUDA provider did not start (session providers {session.get_providers()}; "
                        "see its log above: CUDA/cuDNN libraries or the driver)")
    return problems


EXPORTS: dict = {}  # shape -> (export folder, bench inputs) of tier 1, reused by the profile


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
    EXPORTS[shape] = (folder, inputs)
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


def profile(shape: str, args: argparse.Namespace, out: Path) -> dict:
    """The operator profile of tier 1's export of ``shape`` on ``ort-cuda`` (no CUDA graph: nodes are traced one
    by one); the traces stay under ``--work``, ``profile.json`` and ``profile.png`` are copied to OUT."""
    import shutil

    from topv.profiling.op_profile import profile_export

    folder, inputs = EXPORTS[shape]
    work = Path(args.work) / "profiles" / f"{shape}-{time.strftime('%H%M%S')}"
    summary = profile_export(folder, "ort-cuda", work, inputs.image, inputs.prompt, new_tokens=8,
                             device="cpu" if args.dry_run else args.device)
    dest = out / f"profile-{shape}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("profile.json", "profile.png"):
        if (work / name).is_file():  # no png without matplotlib (not on the GPU machine); plot from the JSON here
            shutil.copyfile(work / name, dest / name)
    return {"shape": shape, "profile": summary}


def bench(shape: str, args: argparse.Namespace, partial: Path) -> dict:
    from topv.profiling.bench import run_bench

    options = _options(shape, args, [None, 4 if args.dry_run else 64])
    options.on_run = lambda runs: partial.write_text(json.dumps({"partial": True, "runs": runs}, indent=2, default=str))
    return run_bench(None, options)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    problems = preflight(args)
    if problems:
        (out / "preflight.txt").write_text("\n".join(problems) + "\n")
        print("preflight failed, nothing run:\n  " + "\n  ".join(problems), flush=True)
        return 2
    tiers = [("1-correctness-tiny", lambda: correctness("tiny", 4, args))]
    if not args.dry_run:
        tiers += [("1-correctness-edge", lambda: correctness("llava-edge-1b", 64, args)),
                  ("1-profile-edge", lambda: profile("llava-edge-1b", args, out)),
                  ("2-bench-edge", lambda: bench("llava-edge-1b", args, out / "2-bench-edge.partial.json")),
                  ("3-bench-7b", lambda: bench("llava-1.5-7b", args, out / "3-bench-7b.partial.json"))]
    else:
        tiers += [("1-profile-tiny", lambda: profile("tiny", args, out)),
                  ("2-bench-tiny", lambda: bench("tiny", args, out / "2-bench-tiny.partial.json"))]
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
            (out / f"{name}.partial.json").unlink(missing_ok=True)
            summary.append(_line(name, result))
        except Exception as exc:  # noqa: BLE001 - a failed tier is recorded and the next one still runs
            (out / f"{name}.error.txt").write_text(traceback.format_exc())
            summary.append(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s: {type(exc).__name__}: {exc}"[:300])
        print(summary[-1], flush=True)
    print("\n=== GPU run summary ===\n" + "\n".join(summary))
    return 0 if all("FAILED" not in s for s in summary) else 1


def _line(name: str, result: dict) -> str:
    if "profile" in result:
        from topv.profiling.op_profile import table as op_table

        p = result["profile"]
        provider = next(iter(p["graphs"].values()))["expected_provider"]
        return (f"{name} ({result['seconds']:.0f} s): {p['fallback_nodes']} nodes off {provider}, "
                f"{p['memcpy_nodes_per_request']:.0f} Memcpy nodes per request\n" + op_table(p))
    if "agreement_vs_ort_cpu" in result:
        parts = [f"{k}: {'=' if v['equal'] else 'differs at ' + str(v['first_difference'])}"
                 f"{'' if v['kept_equal'] else ' KEPT DIFFER'}" for k, v in result["agreement_vs_ort_cpu"].items()]
        return f"{name} ({result['seconds']:.0f} s): tokens vs ort-cpu: " + "; ".join(parts)
    from topv.profiling.bench import table

    return f"{name} ({result['seconds']:.0f} s):\n" + table(result)


if __name__ == "__main__":
    sys.exit(main())
