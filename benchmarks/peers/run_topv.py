"""topv on the peer benchmark's image and 616-token prompt: 32 new tokens, greedy, eos ignored; one JSON line on
stdout like run_genai.py. With --logprob it also feeds the greedy tokens back (teacher forcing) for their summed
log-probability, the number GenAI reports, to compare the two engines' numerics (not timed).

    TOPV_VENV/bin/python benchmarks/peers/run_topv.py EXPORT --work DIR --backend {ort-cpu,openvino}
        [--precision f32|bf16|auto] [--weights int8] [--low-memory] [--threads 2] [--runs 5] [--logprob]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from common import NEW_TOKENS, QUESTION, image_336, mem_status, peak_rss_mib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("export")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--backend", choices=["ort-cpu", "openvino"], default="ort-cpu")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--low-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--logprob", action="store_true")
    a = ap.parse_args()

    from topv.runtime.pipeline import Pipeline

    t0 = time.perf_counter()
    pipe = Pipeline.load(a.export, a.backend, threads=a.threads, verify_checksums=False, precision=a.precision,
                         weights=a.weights, low_memory=a.low_memory)
    load_s = time.perf_counter() - t0
    mem_loaded = mem_status()
    image = image_336(a.work)
    runs = []
    for _ in range(a.runs + 1):
        t = time.perf_counter()
        r = pipe.generate(image, QUESTION, max_new_tokens=NEW_TOKENS, ignore_eos=True)
        runs.append(dict(wall_s=time.perf_counter() - t, ttft_s=r.timings["ttft"], decode=r.timings["decode"],
                         tokens=r.token_ids, prompt_length=r.prompt_length, stages={k: r.timings.get(k, 0.0) for k in
                         ("preprocess", "vision", "prefill_head", "prune", "prefill_tail")}))
    measured = runs[1:] or runs  # --runs 0: the one (warm-up) run
    med = lambda f: statistics.median(f(r) for r in measured)
    manifest = pipe.manifest
    out = dict(engine="topv", backend=a.backend, precision=a.precision or "f32", low_memory=a.low_memory,
               keep=manifest.pruning.keep, weights=a.weights or (manifest.quantization or {}).get("weights") or manifest.dtype,
               export=a.export, threads=a.threads, load_s=round(load_s, 3),
               ttft_ms=round(1e3 * med(lambda r: r["ttft_s"]), 1),
               tpot_ms=round(1e3 * med(lambda r: float(np.mean(r["decode"]))), 2),
               total_ms=round(1e3 * med(lambda r: r["wall_s"]), 1),
               stages_ms={k: round(1e3 * med(lambda r: r["stages"][k]), 1) for k in measured[0]["stages"]},
               input_tokens=runs[0]["prompt_length"], new_tokens=len(runs[0]["tokens"]),
               peak_rss_mib=round(peak_rss_mib(), 1), mem_loaded=mem_loaded, mem_end=mem_status(),
               weights_bytes=sum(r.bytes for name, r in manifest.files.items() if name.endswith(".bin")),
               kv_cache_bytes=manifest.kv.nbytes, same_tokens_every_run=all(r["tokens"] == runs[0]["tokens"] for r in runs),
               tokens=runs[0]["tokens"], torch_imported="torch" in sys.modules)
    out["versions"] = {name: _version(name) for name in ("topv", "onnxruntime", "openvino", "nncf", "transformers")}
    backend = pipe.chain.backend
    if hasattr(backend, "describe"):
        out["compiled"] = backend.describe()  # what each graph runs at, as OpenVINO reports it
    if a.logprob:
        from topv.export.validate import teacher_forced_logits

        inputs = pipe.prepare_inputs(image, QUESTION)
        logits, _ = teacher_forced_logits(pipe, inputs, runs[0]["tokens"])
        lp, margins = 0.0, []
        for z, tok in zip(logits, runs[0]["tokens"]):
            z = np.asarray(z, np.float64).ravel()
            lp += float(z[tok] - (z.max() + np.log(np.exp(z - z.max()).sum())))
            top = np.sort(z)[-2:]
            margins.append(float(top[1] - top[0]))
        out.update(logprob_sum=lp, min_margin=min(margins), prompt_ids=inputs["input_ids"][0].tolist())
    print(json.dumps(out))


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
