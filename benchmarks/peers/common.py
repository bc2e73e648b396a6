"""What both sides of the peer benchmark share: the question, the image, the numbers of tokens, memory readings.

Imported by run_genai.py (GenAI venv) and run_topv.py (topv runtime venv): standard library and PIL only.
"""
from __future__ import annotations

import os
import resource
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# 576 image tokens + 40 text tokens (BOS, "USER: ", the newline after the image, the question, " ASSISTANT:") = 616
QUESTION = ("Look carefully at the picture and describe every object you can see, including its colour, its shape, its "
            "size and where it is placed relative to")
PROMPT_TOKENS = 616
NEW_TOKENS = 32


def image_336(work: Path) -> Path:
    """shapes-vqa test image 0 resized once to the tower's 336x336, so neither side resizes it again."""
    out = work / "image-336.png"
    if not out.exists():
        from PIL import Image

        work.mkdir(parents=True, exist_ok=True)
        Image.open(REPO / "data/shapes-vqa/images/test-00000.png").convert("RGB").resize((336, 336), Image.BICUBIC).save(out)
    return out


def mem_status() -> dict[str, float]:
    """MiB: VmHWM (peak RSS), VmRSS, RssAnon, RssFile, and Pss (a file page mapped twice in this process counts once)."""
    out: dict[str, float] = {}
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(line.split()[1]) / 1024, 1)
    try:
        with open(f"/proc/{os.getpid()}/smaps_rollup") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("Pss", "Pss_Anon", "Pss_File"):
                    out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
