"""The README's main job: export the bundled model with TopV pruning and answer a question about a scene.

    python -m topv.demo [--keep 16] [--layer 2] [--out artifacts/demo]

Uses the bundled trained model ``models/topv-shapes-vqa`` and a bundled scene from
``data/shapes-vqa``. If the bundled model is absent (a source checkout without it), a tiny model with
RANDOM weights is built instead and clearly labelled: its answers are noise, only the mechanics show.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from topv.cli import run_cli, setup_logging

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = ROOT / "models" / "topv-shapes-vqa"
BUNDLED_DATA = ROOT / "data" / "shapes-vqa" / "test.jsonl"

log = logging.getLogger("topv.demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="topv-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", type=int, default=None, help="visual tokens to keep (default: 1/9 of them)")
    p.add_argument("--layer", type=int, default=2, help="pruning layer K (default: 2)")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "demo"), help="where the export and the kept map go")
    p.add_argument("--question-index", type=int, default=0, help="which bundled test question to ask")
    return p


def _bundled_question(index: int) -> tuple[Path, str, str]:
    lines = [json.loads(line) for line in BUNDLED_DATA.read_text().splitlines() if line.strip()]
    item = lines[index % len(lines)]
    return BUNDLED_DATA.parent / item["image"], item["question"], item["answer"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        from topv.export.exporter import ExportOptions, export_model, sample_scene
        from topv.models.spec import model_spec
        from topv.reference.loading import read_model_config
        from topv.runtime.cli import save_map
        from topv.runtime.pipeline import Pipeline

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if (BUNDLED_MODEL / "config.json").is_file() and BUNDLED_DATA.is_file():
            model_dir = BUNDLED_MODEL
            image, question, answer = _bundled_question(args.question_index)
            print(f"model: {model_dir.relative_to(ROOT)} (bundled, trained on the synthetic shapes VQA task)")
        else:
            from topv.models.factory import save_random_llava

            model_dir = save_random_llava(out / "tiny-random-model", "tiny", seed=0)
            image = out / "scene.png"
            sample_scene(224).save(image)
            question, answer = "w1 w2 w3", None
            print("model: TINY MODEL WITH RANDOM WEIGHTS (the bundled model is missing); the answer is noise")
        spec = model_spec(read_model_config(model_dir))
        keep = args.keep or max(1, spec.num_grid_tokens // 9)
        export_dir = out / "export"
        export_model(model_dir, export_dir, ExportOptions(keep=keep, layer=args.layer, force=True))
        pipe = Pipeline.load(export_dir, "ort-cpu")
        print(f"image: {image}")
        print(f"question: {question}")
        print("answer: ", end="", flush=True)
        stream = pipe.generate(image, question, max_new_tokens=8, stream=True)
        for piece in stream:
            print(piece, end="", flush=True)
        print()
        result = stream.result
        if answer is not None:
            print(f"expected: {answer}")
        kept_map = save_map(pipe, image, result.kept_indices, out / "kept-map.png")
        t = result.timings_ms()
        print(f"kept {len(result.kept_indices)} of {spec.num_visual_tokens} visual tokens after layer {args.layer}; "
              f"KV cache {pipe.kv_cache_bytes / 1e6:.2f} MB (unpruned {pipe.manifest['kv_cache']['bytes_unpruned'] / 1e6:.2f} MB)")
        print("timings (ms): " + ", ".join(
            f"{k} {v:.1f}" for k, v in t.items() if not isinstance(v, list)
        ) + f", decode/token {sum(t['decode']) / max(1, len(t['decode'])):.2f}")
        print(f"kept-token map: {kept_map}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
