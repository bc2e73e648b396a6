"""OpenVINO GenAI's VLMPipeline on the peer benchmark's image and 616-token prompt: 32 new tokens, greedy,
eos ignored, prefix caching off, one JSON line on stdout (load time, TTFT / decode per token / total as medians
of --runs after one warm-up, peak RSS, the greedy tokens, the prompt's token ids, the summed log-probability).

    GENAI_VENV/bin/python benchmarks/peers/run_genai.py IR_DIR --work DIR --precision {f32,default} [--threads 2] [--runs 5]

* ``VLMPipeline(dir, "CPU", scheduler_config=sc, ...)`` with prefix caching off and one prefill chunk: GenAI on
  CPU runs continuous batching (paged attention) with prefix caching on by default, which would serve repeated
  requests from cache; a bare ``SchedulerConfig()`` would split the prefill in chunks of 256 tokens.
* ``--precision f32`` sets ``INFERENCE_PRECISION_HINT=f32`` and ``KV_CACHE_PRECISION=f32``; ``default`` leaves the
  plugin's defaults (bf16 compute where the CPU has it, u8 KV cache).
* The prompt is ``"USER: <image>{question} ASSISTANT:"`` with ``apply_chat_template=False``: GenAI's LLaVA path
  expands ``<image>`` into 576 image tokens followed by a newline, which is what topv's chat template renders.
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
    ap.add_argument("model")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--precision", choices=["f32", "default"], default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    import openvino as ov
    import openvino_genai as g
    from PIL import Image

    props = {"INFERENCE_NUM_THREADS": a.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if a.precision == "f32":
        props.update(INFERENCE_PRECISION_HINT="f32", KV_CACHE_PRECISION="f32")
    t0 = time.perf_counter()
    sc = g.SchedulerConfig()
    sc.enable_prefix_caching = False
    sc.max_num_batched_tokens = 1 << 30
    sc.dynamic_split_fuse = False
    pipe = g.VLMPipeline(a.model, "CPU", scheduler_config=sc, **props)
    load_s = time.perf_counter() - t0
    mem_loaded = mem_status()

    cfg = g.GenerationConfig()
    cfg.max_new_tokens = cfg.min_new_tokens = NEW_TOKENS
    cfg.ignore_eos = True
    cfg.do_sample = False
    cfg.apply_chat_template = False
    cfg.logprobs = 1  # scores[0]: the summed log-probability of the greedy tokens
    prompt = f"USER: <image>{QUESTION} ASSISTANT:"
    image = ov.Tensor(np.asarray(Image.open(image_336(a.work)).convert("RGB"), dtype=np.uint8)[None])

    class Collect(g.StreamerBase):
        """The generated ids, and when the first one arrived (TTFT from the call, as topv's, preprocessing included)."""

        def __init__(self):
            super().__init__()
            self.tokens = []
            self.first = None

        def write(self, token):
            if self.first is None:
                self.first = time.perf_counter()
            self.tokens.extend(token if isinstance(token, list) else [token])
            return g.StreamingStatus.RUNNING

        def end(self):
            pass

    runs = []
    for _ in range(a.runs + 1):
        s = Collect()
        t = time.perf_counter()
        res = pipe.generate(prompt, images=[image], generation_config=cfg, streamer=s)
        wall = time.perf_counter() - t
        pm = res.perf_metrics
        runs.append(dict(wall_s=wall, ttft_ms=1e3 * (s.first - t), genai_ttft_ms=pm.get_ttft().mean, tpot_ms=pm.get_tpot().mean,
                         embeds_ms=pm.get_prepare_embeddings_duration().mean,
                         input_tokens=pm.get_num_input_tokens(), tokens=s.tokens, score=float(res.scores[0])))
    measured = runs[1:] or runs  # --runs 0: the one (warm-up) run
    med = lambda k: statistics.median(r[k] for r in measured)
    unified = "USER: " + "<image>" * 576 + "\n" + QUESTION + " ASSISTANT:"
    prompt_ids = pipe.get_tokenizer().encode(unified).input_ids.data[0].tolist()
    out = dict(engine="genai", version=g.get_version().split("-")[0], model=a.model, precision=a.precision, keep=None,
               weights="int8" if "int8" in Path(a.model).name else "fp32", threads=a.threads, load_s=round(load_s, 3),
               ttft_ms=round(med("ttft_ms"), 1), genai_reported_ttft_ms=round(med("genai_ttft_ms"), 1),
               vision_and_embeddings_ms=round(med("embeds_ms"), 1), tpot_ms=round(med("tpot_ms"), 2), total_ms=round(1e3 * med("wall_s"), 1),
               input_tokens=len(prompt_ids), genai_input_tokens=measured[0]["input_tokens"], new_tokens=len(measured[0]["tokens"]),
               peak_rss_mib=round(peak_rss_mib(), 1), mem_loaded=mem_loaded, mem_end=mem_status(),
               same_tokens_every_run=all(r["tokens"] == runs[0]["tokens"] for r in runs),
               logprob_sum=runs[0]["score"], tokens=runs[0]["tokens"], prompt_ids=prompt_ids)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
