"""Write shapes-VQA splits as JSON lines plus palette PNGs, and read them back.

    python -m tools.data.writer --out data/shapes-vqa            # val (seed 1, 300) and test (seed 2, 600)
    python -m tools.data.writer --out /tmp/x --split val:50:7     # any split NAME:COUNT:SEED

Each line of ``<split>.jsonl`` is ``{"image": "<path relative to the .jsonl file>", "question": str,
"answer": str}``; images go to ``images/<split>-<index>.png``. Question types are balanced: the types
are dealt round-robin in a seeded shuffled order, one question per scene.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from tools.data.shapes import QUESTION_TYPES, Question, Scene, make_rng, question_type, render_scene, sample_example

DEFAULT_SPLITS = (("val", 300, 1), ("test", 600, 2))


def generate_split(name: str, count: int, seed: int) -> Iterator[tuple[Scene, Question]]:
    """``count`` (scene, question) pairs of split ``name``, types balanced, deterministic in (name, seed)."""
    rng = make_rng(name, seed)
    order: list[str] = []
    for _ in range(count):
        if not order:
            order = list(QUESTION_TYPES)
            rng.shuffle(order)
        yield sample_example(rng, order.pop())


def write_split(out_dir: str | Path, name: str, count: int, seed: int) -> Path:
    """Write ``<out_dir>/<name>.jsonl`` and its images; returns the .jsonl path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.jsonl"
    with path.open("w") as f:
        for index, (scene, q) in enumerate(generate_split(name, count, seed)):
            rel = f"images/{name}-{index:05d}.png"
            render_scene(scene).save(out / rel, optimize=True)
            f.write(json.dumps({"image": rel, "question": q.question, "answer": q.answer}) + "\n")
    return path


def read_split(path: str | Path) -> list[dict[str, Any]]:
    """The records of a .jsonl split, with ``image`` resolved to an absolute path."""
    path = Path(path)
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            item["image"] = str((path.parent / item["image"]).resolve())
            records.append(item)
    return records


def type_counts(path: str | Path) -> dict[str, int]:
    counts = Counter(question_type(r["question"]) for r in read_split(path))
    return {t: counts.get(t, 0) for t in QUESTION_TYPES}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.data.writer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", action="append", default=None, metavar="NAME:COUNT:SEED",
                   help="a split to write (repeatable); default: val:300:1 and test:600:2")
    args = p.parse_args(argv)
    splits = DEFAULT_SPLITS
    if args.split:
        splits = tuple((n, int(c), int(s)) for n, c, s in (x.split(":") for x in args.split))
    for name, count, seed in splits:
        path = write_split(args.out, name, count, seed)
        print(f"{path}: {count} questions (seed {seed}); types {type_counts(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
