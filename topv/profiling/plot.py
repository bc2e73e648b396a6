"""Plots of a benchmark result: latency breakdown per run (stacked stages) and memory bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STAGES = (("vision", "vision"), ("prefill_head", "prefill layers 0..K"), ("prune", "TopV prune"),
          ("prefill_tail", "prefill layers K+1.."), ("prefill", "prefill (transformers)"), ("decode_total", "decode"))


def plot_bench(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    labels = [r["label"].replace("topv ", "").replace("transformers ", "HF ") for r in runs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.6 * len(runs) + 2.5), gridspec_kw={"width_ratios": [3, 2]})
    left = [0.0] * len(runs)
    for key, name in STAGES:
        widths = []
        for r in runs:
            s = r["stats"].get(key)
            if key == "prefill" and r["kind"] == "topv":
                s = None  # topv runs show the prefill split into its three graphs
            widths.append(s["p50_ms"] if s else 0.0)
        if any(widths):
            ax1.barh(labels, widths, left=left, label=name)
            left = [a + b for a, b in zip(left, widths)]
    ax1.invert_yaxis()
    ax1.set_xlabel(f"ms (p50), {result['meta']['new_tokens']} new tokens, {result['meta']['prompt_tokens']}-token prompt")
    ax1.set_title("latency breakdown")
    ax1.legend(fontsize=8, loc="lower right")
    kv = [r.get("kv_cache_bytes", 0) / 1e6 for r in runs]
    rss = [(r.get("peak_host_rss_bytes") or 0) / 1e6 for r in runs]
    gpu = [(r.get("peak_gpu_bytes") or 0) / 1e6 for r in runs]
    y = list(range(len(runs)))
    h = 0.27
    ax2.barh([v - h for v in y], kv, height=h, label="static KV cache")
    ax2.barh(y, rss, height=h, label="peak host RSS")
    if any(gpu):
        ax2.barh([v + h for v in y], gpu, height=h, label="peak GPU memory")
    ax2.set_yticks(y, labels)
    ax2.invert_yaxis()
    ax2.set_xscale("symlog")
    ax2.set_xlabel("MB")
    ax2.set_title("memory")
    ax2.legend(fontsize=8)
    device = result["meta"]["device"].get("gpu") or result["meta"]["device"].get("cpu")
    fig.suptitle(f"topv-bench on {device}")
    fig.tight_layout()
    from topv.cli.outputs import save_figure

    return save_figure(fig, Path(path))


def plot_op_profile(summary: dict[str, Any], path: str | Path, top: int = 7) -> Path:
    """One bar per graph (ms in one request), split by the operator types that take the most time overall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graphs = summary["graphs"]
    totals: dict[str, float] = {}
    for s in graphs.values():
        for o in s["ops"]:
            totals[o["op"]] = totals.get(o["op"], 0.0) + o["ms"]
    kinds = sorted(totals, key=lambda op: -totals[op])[:top]
    names = list(graphs)
    fig, ax = plt.subplots(figsize=(11.5, 0.5 * len(names) + 2.2))
    left = [0.0] * len(names)
    for op in kinds + ["other"]:
        widths = [sum(o["ms"] for o in graphs[g]["ops"] if (o["op"] == op) or (op == "other" and o["op"] not in kinds))
                  for g in names]
        ax.barh(names, widths, left=left, label=op)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set_xlabel(f"ms in one request (node times; {summary['new_tokens']} new tokens, "
                  f"{summary['prompt_tokens']}-token prompt, {summary['kept_prompt_tokens']} kept)")
    ax.set_title(f"operator time per graph: {summary['backend']} on {summary['device']}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    from topv.cli.outputs import save_figure

    return save_figure(fig, Path(path))
