"""The GPU run, in tiers ordered by value, each writing its JSON under OUT as soon as it finishes.

    python3 benchmarks/gpu_run.py --out $OUT                      # on the GPU machine (benchmarks/gpu.sh)
    python3 benchmarks/gpu_run.py --out /tmp/dry --device cpu --dry-run    # the CPU dry run (tests)

A preflight checks the libraries and, on CUDA, that ONNX Runtime's CUDA provider runs a graph (exit 2 naming
what is missing). Then:
1. correctness: random-weight models of the ``tiny`` and ``llava-edge-1b`` shapes in fp16, exported on the
   device; ``ort-cpu``, ``torch`` and ``ort-cuda`` on the same export: 32 greedy tokens (eos ignored) and the
   kept indices, pairwise, with the first step where tokens differ; then the operator profile of the edge export
   on ``ort-cuda`` (ONNX Runtime's per-node trace and, on CUDA, the device kernels under torch's profiler): where
   the time goes, nodes that fell back to the CPU provider, Memcpy nodes.
2. ``topv-bench`` on the edge shape at keep 64, ``ort-cuda`` and ``torch``, with transformers eager and
   static+compiled as baselines in the same run.
3. ``ort-cuda`` with the decode step captured as a CUDA graph against without, on tier 1's exports (last of the
   cheap tiers: a fault in a captured graph can leave the process's CUDA context unusable).
4. ``topv-bench`` on the edge shape at keep all (its own export), ratios computed with tier 2's runs.
5. keep all and 64 on ``llava-1.5-7b`` shapes with both baselines, if the clock allows (``--deadline``).
A short table of every tier's result is printed last. ``--dry-run`` uses the tiny shape everywhere and drops
the CUDA-only baselines, so the script cannot rot between GPU sessions. Everything goes to one file,
``OUT/gpu-results.json`` (a device call brings back at most 8 files), rewritten after every tier and, in the bench
tiers, after every measured run, so a command cut short keeps what it finished; the large traces stay in
``--work``; the profile's plot is ``OUT/profile-<shape>.png``.
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


EXPORTS: dict = {}  # shape -> (export folder, bench inputs) of tier 1, reused by the profile and the CUDA-graph tier
TRIED: set = set()  # shapes tier 1 tried to export (a failed one is not exported again by a later tier)
RESULTS_FILE = "gpu-results.json"  # one file: a device call brings back at most 8 files from OUT


class Results:
    """Every tier's result (or error, or partial runs) in one JSON file under OUT, rewritten atomically on each change."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        from topv.versions import library_versions

        self.path = out / RESULTS_FILE
        self.data = {"args": vars(args), "versions": library_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "tiers": {}, "summary": []}

    def set(self, tier: str, value: dict) -> None:
        self.data["tiers"][tier] = value
        self.save()

    def get(self, tier: str) -> dict | None:
        return self.data["tiers"].get(tier)

    def save(self) -> None:
        from topv.cli.outputs import atomic_write

        atomic_write(self.path, (json.dumps(self.data, indent=2, default=str) + "\n").encode())


def _generate(folder: Path, backend: str, device: str | None, inputs, graph: bool | None, repeats: int = 1) -> dict:
    """``repeats`` 32-token greedy generations (eos ignored) on a fresh pipeline: tokens, kept, TTFT, decode ms/token."""
    import statistics

    from topv.runtime.pipeline import Pipeline

    pipe = Pipeline.load(folder, backend, device=device, cuda_graph=graph, verify_checksums=False)
    try:
        results = [pipe.generate(inputs.image, inputs.prompt, max_new_tokens=32, ignore_eos=True) for _ in range(repeats)]
    finally:
        pipe.backend.close()
    steps = [t for r in results[1:] or results for t in r.timings_ms()["decode"]]  # the first run warms up
    last = results[-1]
    return {"tokens": last.token_ids, "kept": last.kept_indices, "ttft_ms": last.timings_ms()["ttft"],
            "decode_ms_per_token_p50": statistics.median(steps) if steps else None,
            "same_tokens_every_run": all(r.token_ids == last.token_ids for r in results)}


def _agreements(runs: dict, pairs: list[tuple[str, str]]) -> dict:
    """Tokens and kept indices of each pair of finished runs (a run that raised is left out)."""
    out = {}
    for a, b in pairs:
        if "tokens" in runs.get(a, {}) and "tokens" in runs.get(b, {}):
            out[f"{b} vs {a}"] = {**_agreement(runs[a]["tokens"], runs[b]["tokens"]), "kept_equal": runs[a]["kept"] == runs[b]["kept"]}
    return out


def correctness(shape: str, keep: int, args: argparse.Namespace) -> dict:
    """One export of ``shape`` (the one tier 2 measures, so it is reused), then every backend on the same request.
    A backend that raises is recorded in its slot; the others still run. The CUDA graph has its own later tier:
    a fault in a captured graph can leave the process's CUDA context unusable."""
    from topv.profiling.bench import _export_for, prepare

    options = _options(shape, args, [keep])
    TRIED.add(shape)
    t0 = time.perf_counter()
    inputs = prepare(None, options)
    built = time.perf_counter() - t0
    folder = _export_for(inputs.source, keep, options, inputs.max_prompt)
    exported = time.perf_counter() - t0 - built
    EXPORTS[shape] = (folder, inputs)
    runs = {}
    for backend in ("ort-cpu", "torch", "ort-cuda"):
        try:
            runs[backend] = _generate(folder, backend, None if backend == "ort-cpu" else options.device, inputs, False)
        except Exception as exc:  # noqa: BLE001 - recorded; the next backend still runs
            runs[backend] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    # ort-cpu runs the fp16 graphs partly in float32 (ONNX Runtime's CPU casts), so on the GPU the like-for-like
    # pair is ort-cuda vs torch, both float16 on the device
    pairs = [("ort-cpu", "torch"), ("ort-cpu", "ort-cuda"), ("torch", "ort-cuda")]
    return {"shape": shape, "dtype": options.dtype, "keep": keep, "export": str(folder), "seconds_build": built,
            "seconds_export": exported, "validation": json.loads((folder / "validation.json").read_text())["generation"],
            "runs": runs, "agreement": _agreements(runs, pairs)}


def _tier1(shape: str) -> tuple:
    if shape not in EXPORTS:
        raise RuntimeError(f"tier 1 has no export of {shape} (its correctness tier failed: see its error in gpu-results.json)")
    return EXPORTS[shape]


def profile(shape: str, args: argparse.Namespace, out: Path) -> dict:
    """The operator profile of tier 1's export of ``shape`` on ``ort-cuda`` (no CUDA graph: nodes are traced one
    by one); the traces stay under ``--work``, the summary goes into the results, the plot to OUT."""
    import shutil

    from topv.profiling.op_profile import profile_export

    folder, inputs = _tier1(shape)
    work = Path(args.work) / "profiles" / f"{shape}-{time.strftime('%H%M%S')}"
    summary = profile_export(folder, "ort-cuda", work, inputs.image, inputs.prompt, new_tokens=8,
                             device="cpu" if args.dry_run else args.device)
    if (work / "profile.png").is_file():  # none without matplotlib; then plot it from the JSON afterwards
        shutil.copyfile(work / "profile.png", out / f"profile-{shape}.png")
    return {"shape": shape, "profile": summary}


def cuda_graph(args: argparse.Namespace) -> dict:
    """``ort-cuda`` with the decode step captured as a CUDA graph against ``ort-cuda`` without it, on tier 1's exports:
    tokens (expected identical: the same kernels, replayed) and decode ms/token, 3 generations each."""
    device = "cpu" if args.dry_run else args.device
    out = {}
    for shape in EXPORTS:
        folder, inputs = EXPORTS[shape]
        runs = {}
        for label, graph in (("ort-cuda", False), ("ort-cuda+graph", True)):
            try:
                runs[label] = _generate(folder, "ort-cuda", device, inputs, graph, repeats=3)
            except Exception as exc:  # noqa: BLE001 - recorded
                runs[label] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        out[shape] = {"runs": runs, "agreement": _agreements(runs, [("ort-cuda", "ort-cuda+graph")])}
    return {"cuda_graph": out}


def bench(shape: str, args: argparse.Namespace, results: Results, tier: str, keeps: list, baselines: bool,
          earlier: str | None = None) -> dict:
    """``topv-bench`` on ``shape`` at ``keeps``, its finished runs saved as the tier's partial result after each one;
    with ``earlier`` (another tier of the same shape), the ratios are computed over both tiers' runs."""
    from topv.profiling.bench import ratios, run_bench

    if shape in TRIED and shape not in EXPORTS:  # its export failed its checks in tier 1: it would fail again, slowly
        raise RuntimeError(f"tier 1's export of {shape} failed (see its error in gpu-results.json); not exporting it again")
    options = _options(shape, args, keeps)
    if not baselines:
        options.baselines = []
    options.on_run = lambda runs: results.set(tier, {"partial": True, "runs": runs})
    result = run_bench(None, options)
    before = results.get(earlier) if earlier else None
    if before and "runs" in before:
        result["ratios_with_earlier_tier"] = ratios(before["runs"] + result["runs"])
    return result


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
    results = Results(out, args)
    edge, small = ("tiny", 4) if args.dry_run else ("llava-edge-1b", 64)
    tiers = [("1-correctness-tiny", lambda: correctness("tiny", 4, args))]
    if not args.dry_run:
        tiers += [("1-correctness-edge", lambda: correctness("llava-edge-1b", 64, args))]
    tiers += [(f"1-profile-{edge}", lambda: profile(edge, args, out)),
              (f"2-bench-{edge}", lambda: bench(edge, args, results, f"2-bench-{edge}", [small], True)),
              ("3-cuda-graph", lambda: cuda_graph(args)),
              (f"4-bench-{edge}-keepall", lambda: bench(edge, args, results, f"4-bench-{edge}-keepall", [None], False,
                                                       f"2-bench-{edge}"))]
    if not args.dry_run:
        tiers += [("5-bench-7b", lambda: bench("llava-1.5-7b", args, results, "5-bench-7b", [None, 64], True))]
    summary = results.data["summary"]
    for name, run in tiers:
        if time.perf_counter() - start > args.deadline:
            summary.append(f"{name}: skipped (deadline {args.deadline:.0f} s reached)")
            results.set(name, {"skipped": f"deadline {args.deadline:.0f} s reached"})
            continue
        t0 = time.perf_counter()
        try:
            result = run()
            result["seconds"] = time.perf_counter() - t0
            summary.append(_line(name, result))
            results.set(name, result)
        except Exception as exc:  # noqa: BLE001 - a failed tier is recorded and the next one still runs
            summary.append(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s: {type(exc).__name__}: {exc}"[:300])
            results.set(name, {**(results.get(name) or {}), "error": f"{type(exc).__name__}: {exc}",
                               "traceback": traceback.format_exc()})
        print(summary[-1], flush=True)
    print("\n=== GPU run summary ===\n" + "\n".join(summary))
    return 0 if all("FAILED" not in s for s in summary) else 1

def _pairs(agreement: dict) -> str:
    return "; ".join(f"{k}: {'=' if v['equal'] else 'differs at ' + str(v['first_difference'])}"
                     f"{'' if v['kept_equal'] else ' KEPT DIFFER'}" for k, v in agreement.items())


def _line(name: str, result: dict) -> str:
    head = f"{name} ({result['seconds']:.0f} s)"
    if "profile" in result:
        from topv.profiling.op_profile import table as op_table

        p = result["profile"]
        provider = next(iter(p["graphs"].values()))["expected_provider"]
        return (f"{head}: {p['fallback_nodes']} nodes off {provider}, "
                f"{p['memcpy_nodes_per_request']:.0f} Memcpy nodes per request\n" + op_table(p))
    if "agreement" in result:
        failed = [f"{k} FAILED: {v['error'][:120]}" for k, v in result["runs"].items() if "error" in v]
        return f"{head}: tokens: " + "; ".join([_pairs(result["agreement"])] + failed)
    if "cuda_graph" in result:
        parts = []
        for shape, r in result["cuda_graph"].items():
            ms = [f"{k} {v['decode_ms_per_token_p50']:.2f} ms/token" if "error" not in v else f"{k} FAILED: {v['error'][:120]}"
                  for k, v in r["runs"].items()]
            parts.append(f"{shape}: {_pairs(r['agreement']) or 'no agreement'}; " + ", ".join(ms))
        return f"{head}: " + " | ".join(parts)
    from topv.profiling.bench import table

    both = result.get("ratios_with_earlier_tier", {})
    return f"{head}:\n" + table(result) + "".join(
        f"\n{label} (with the earlier tier's runs): " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()) for label, r in both.items())


if __name__ == "__main__":
    sys.exit(main())
