"""The peer benchmark's rounds as one JSON and a Markdown table, with the issue's targets checked.

    .venv/bin/python benchmarks/peers/summarize.py BENCH.jsonl --agreement GENAI.json ORT.json OV.json
        --json benchmarks/results/peers-cpu.json --markdown TABLE.md

Each configuration's value is the median over rounds of its per-round medians (the rounds interleave the
configurations, so a slow spell of the machine hits all of them alike).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

FIELDS = ("ttft_ms", "tpot_ms", "total_ms", "load_s", "peak_rss_mib")


def key(r: dict) -> tuple:
    return (r["engine"], r.get("backend", "genai"), r["precision"], r["weights"], r["keep"], r.get("low_memory", False))


def label(r: dict) -> str:
    if r["engine"] == "genai":
        return f"OpenVINO GenAI {r['version']} VLMPipeline"
    return f"topv {r['backend']}" + (" low_memory" if r.get("low_memory") else "")


def compute_precision(r: dict) -> str:
    """f32, or the lower precision the graphs after the pruning decision ran at (as OpenVINO reports it)."""
    if r["engine"] == "topv" and r["backend"] == "ort-cpu":
        return "int8" if r["weights"] == "int8" else "f32"
    if r["engine"] != "topv":
        return "f32" if r["precision"] == "f32" else "default"
    hint = r.get("compiled", {}).get("decode_step", {}).get("precision", r["precision"])
    hint = hint.replace("<Type: '", "").replace("'>", "")
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(hint, hint)


def precision_text(r: dict, bf16_cpu: bool) -> str:
    if r["engine"] == "genai":
        default = "bf16" if bf16_cpu else "f32"
        return "f32 (f32 KV cache)" if r["precision"] == "f32" else f"its defaults ({default} here, u8 KV cache)"
    p = compute_precision(r)
    if r["backend"] == "ort-cpu" and r["weights"] == "int8":
        return "int8 MatMulInteger (activations quantized per call), every graph"
    if p == "f32":
        return "f32"
    return f"{p} (every graph)" if r["keep"] is None else f"{p} after the pruning decision (vision, layers 0..K, prune: f32)"


def combine(rows: list[dict], bf16_cpu: bool) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = []
    for rs in groups.values():
        entry = dict(rs[0])
        entry.pop("round", None)
        for f in FIELDS:
            entry[f] = round(statistics.median(r[f] for r in rs), 2)
        entry["rounds"] = len(rs)
        entry["per_round_total_ms"] = [r["total_ms"] for r in rs]
        entry["label"] = label(entry)
        entry["compute_precision"] = compute_precision(entry)
        entry["precision_text"] = precision_text(entry, bf16_cpu)
        out.append(entry)
    return out


def markdown(entries: list[dict]) -> str:
    lines = ["| system | precision | weights | keep | TTFT ms | decode ms/tok | 32 tokens ms | peak RSS MiB | load s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        keep = "all" if e["keep"] is None else e["keep"]
        lines.append(f"| {e['label']} | {e['precision_text']} | {e['weights']} | {keep} | {e['ttft_ms']:.0f} | {e['tpot_ms']:.1f} | "
                     f"{e['total_ms']:.0f} | {e['peak_rss_mib']:.0f} | {e['load_s']:.1f} |")
    return "\n".join(lines)


def profile(entries: list[dict]) -> str:
    """Where TTFT goes (ms, medians): topv's own stage timings; GenAI's vision + embedding time from its metrics."""
    lines = ["| system | precision | keep | preprocess | vision | layers 0..K | prune | layers K+1.. | TTFT | decode ms/tok |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        keep = "all" if e["keep"] is None else e["keep"]
        if e["engine"] == "genai":
            v = e.get("vision_and_embeddings_ms")
            rest = e["ttft_ms"] - v if v is not None else None
            cells = ["-", f"{v:.0f} (with embedding)" if v is not None else "-", "-", "-",
                     f"{rest:.0f} (whole LM)" if rest is not None else "-"]
        else:
            st = e.get("stages_ms", {})
            cells = [f"{st.get(k, 0):.0f}" if k != "prune" else f"{st.get(k, 0):.1f}"
                     for k in ("preprocess", "vision", "prefill_head", "prune", "prefill_tail")]
        lines.append(f"| {e['label']} | {e['precision_text']} | {keep} | " + " | ".join(cells)
                     + f" | {e['ttft_ms']:.0f} | {e['tpot_ms']:.1f} |")
    return "\n".join(lines)


def plot(entries: list[dict], path: Path) -> None:
    """Stacked TTFT stages, decode time of the other 31 tokens, and peak RSS, one bar per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{e['label'].replace('OpenVINO GenAI ', 'GenAI ').replace(' VLMPipeline', '')}\n{e['compute_precision']} "
             f"{e['weights']} keep {'all' if e['keep'] is None else e['keep']}" + (" low-mem" if e.get("low_memory") else "")
             for e in entries]
    parts = {"preprocess": [], "vision": [], "LM before pruning / whole LM": [], "prune": [], "LM after pruning": [],
             "decode (31 tokens)": []}
    for e in entries:
        if e["engine"] == "genai":
            v = e.get("vision_and_embeddings_ms") or 0.0
            values = [0.0, v, e["ttft_ms"] - v, 0.0, 0.0]
        else:
            st = e["stages_ms"]
            values = [st["preprocess"], st["vision"], st["prefill_head"], st["prune"], st["prefill_tail"]]
        for key, v in zip(parts, values + [e["total_ms"] - e["ttft_ms"]]):
            parts[key].append(v)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 0.45 * len(entries) + 1.8), gridspec_kw={"width_ratios": [3, 1]})
    left = [0.0] * len(entries)
    for key, values in parts.items():
        ax.barh(names, values, left=left, label=key)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("ms (medians; 616-token prompt, 32 new tokens, 2 threads)")
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    ax2.barh(names, [e["peak_rss_mib"] for e in entries], color="gray")
    ax2.invert_yaxis()
    ax2.set_yticks([])
    ax2.set_xlabel("peak RSS (MiB)")
    fig.suptitle("topv against OpenVINO GenAI on a LLaVA (cpu-bench shape), this CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def find(entries: list[dict], **want) -> list[dict]:
    return [e for e in entries if all(e.get(k) == v for k, v in want.items())]


def targets(entries: list[dict]) -> list[dict]:
    """The issue's three targets, each with the configurations compared and by how much it is met or missed.

    Target 1 asks for a precision whose logits cosine against float32 is >= 0.999. float32 meets it by definition;
    bf16 after the pruning decision is reported separately, its cosine being measured on the trained bundled model
    (topv-eval --agreement; random benchmark weights say nothing about it)."""
    out = []
    g_default = find(entries, engine="genai", precision="default", weights="fp32")
    g_int8 = find(entries, engine="genai", precision="default", weights="int8")
    for precision, note in (("f32", "cosine 1 (float32)"), ("bf16", "cosine: topv-eval --agreement on the bundled model")):
        cands = [e for e in find(entries, engine="topv", keep=64, weights="fp32") if e["compute_precision"] == precision]
        if g_default and cands:
            g, t = g_default[0], min(cands, key=lambda e: e["total_ms"])
            speed, ttft = g["total_ms"] / t["total_ms"], t["ttft_ms"] / g["ttft_ms"]
            out.append({"target": f"topv keep 64 ({precision}) >= 1.3x faster end to end than GenAI's defaults, TTFT <= 0.5x",
                        "topv": f"{t['label']} ({t['precision_text']})", "speedup": round(speed, 3),
                        "ttft_ratio": round(ttft, 3), "met": speed >= 1.3 and ttft <= 0.5, "note": note})
    int8_64 = find(entries, engine="topv", keep=64, weights="int8")
    if g_int8 and int8_64:
        g, t = g_int8[0], min(int8_64, key=lambda e: e["total_ms"])
        speed, rss = g["total_ms"] / t["total_ms"], t["peak_rss_mib"] / g["peak_rss_mib"]
        out.append({"target": "int8 topv at keep 64 >= 1.5x faster end to end than GenAI int8, peak RSS no higher",
                    "topv": f"{t['label']} ({t['precision_text']})", "speedup": round(speed, 3), "rss_ratio": round(rss, 3),
                    "met": speed >= 1.5 and rss <= 1.0})
    float_all = [e for e in find(entries, engine="topv", keep=None, weights="fp32") if e["compute_precision"] == "f32"]
    if float_all:
        t = min(float_all, key=lambda e: e["peak_rss_mib"])
        budget = (t["weights_bytes"] + t["kv_cache_bytes"]) / 2**20
        out.append({"target": "float32 export at keep all: peak RSS <= 1.3x (weights + KV cache)",
                    "topv": t["label"], "peak_rss_mib": t["peak_rss_mib"], "weights_plus_kv_mib": round(budget, 1),
                    "ratio": round(t["peak_rss_mib"] / budget, 3), "met": t["peak_rss_mib"] <= 1.3 * budget})
    return out


def agreement(paths: list[str]) -> dict:
    genai, *topv = (json.loads(Path(p).read_text().strip().splitlines()[-1]) for p in paths)
    out = {"genai_logprob_sum": genai["logprob_sum"], "distinct_tokens": len(set(genai["tokens"]))}
    for t in topv:
        name = t["backend"]
        div = next((i for i, (a, b) in enumerate(zip(genai["tokens"], t["tokens"])) if a != b), None)
        out[name] = {"prompt_ids_identical": genai["prompt_ids"] == t["prompt_ids"], "prompt_tokens": len(t["prompt_ids"]),
                     "tokens_identical": genai["tokens"] == t["tokens"], "first_divergence": div,
                     "logprob_sum": t["logprob_sum"], "logprob_diff": genai["logprob_sum"] - t["logprob_sum"],
                     "min_top2_margin": t["min_margin"]}
    return out


def cpu() -> dict:
    info = {"platform": platform.platform()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags"))
        info["bf16"] = {"amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}
        info["logical_cpus"] = text.count("processor\t:")
    except (OSError, StopIteration):
        pass
    return info


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("--agreement", nargs=3, metavar=("GENAI", "ORT", "OV"))
    ap.add_argument("--json", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--plot", default=None, help="PNG of the stage breakdown and peak RSS")
    a = ap.parse_args()
    rows = [json.loads(l) for l in Path(a.bench).read_text().splitlines() if l.strip()]
    machine = cpu()
    entries = combine(rows, any(machine.get("bf16", {}).values()))
    lengths = {(e["label"], e["input_tokens"]) for e in entries}
    if len({n for _, n in lengths}) != 1:
        print(f"error: the engines saw prompts of different lengths: {sorted(lengths)}", file=sys.stderr)
        return 1
    result = {"meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
                       "versions": {"genai": next((e["version"] for e in entries if e["engine"] == "genai"), None),
                                    **next((e.get("versions", {}) for e in entries if e["engine"] == "topv"), {})},
                       "commit": _commit(), "prompt_tokens": entries[0]["input_tokens"], "new_tokens": entries[0]["new_tokens"],
                       "threads": entries[0]["threads"]},
              "runs": entries, "targets": targets(entries)}
    if a.agreement:
        result["agreement"] = agreement(a.agreement)
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(entries) + "\n\nWhere the time to the first token goes:\n\n" + profile(entries)
    Path(a.markdown).write_text(table + "\n")
    print(table)
    if a.plot:
        plot(entries, Path(a.plot))
        print(f"plot: {a.plot}")
    for t in result["targets"]:
        print(("MET   " if t["met"] else "MISSED") + f" {t['target']}: " + json.dumps({k: v for k, v in t.items() if k not in ("target", "met")}))
    if a.agreement:
        print("agreement (pruning off, f32):", json.dumps(result["agreement"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
