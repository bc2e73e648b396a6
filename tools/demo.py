"""The README's main job: export the bundled model with TopV pruning and answer a question about a bundled scene.

    python -m tools.demo [--keep 16] [--layer 2] [--out artifacts/demo]   (from the repository root; scripts/demo.sh)

Uses the bundled trained model ``models/topv-shapes-vqa`` and a bundled scene from ``data/shapes-vqa``; both
ship with the repository (not with the wheel).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from topv.cli import run_cli, setup_logging

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_MODEL = ROOT / "models" / "topv-shapes-vqa"
BUNDLED_DATA = ROOT / "data" / "shapes-vqa" / "test.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", type=int, default=None, help="visual tokens to keep (default: 1/9 of them)")
    p.add_argument("--layer", type=int, default=2, help="pruning layer K (default: 2)")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "demo"), help="where the export and the kept map go")
    p.add_argument("--question-index", type=int, default=0, help="which bundled test question to ask")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def body() -> int:
        from topv.errors import ArtifactError
        from topv.export.exporter import ExportOptions, export_model
        from topv.runtime.kept_map import save_map
        from topv.runtime.pipeline import Pipeline

        if not (BUNDLED_MODEL / "config.json").is_file() or not BUNDLED_DATA.is_file():
            raise ArtifactError(f"The bundled model {BUNDLED_MODEL} or data {BUNDLED_DATA} is missing; run the demo from a full "
                                "clone of the repository.")
        items = [json.loads(line) for line in BUNDLED_DATA.read_text().splitlines() if line.strip()]
        item = items[args.question_index % len(items)]
        image, question = BUNDLED_DATA.parent / item["image"], item["question"]
        from topv.families import family_for_config, read_model_config

        raw = read_model_config(BUNDLED_MODEL)
        spec = family_for_config(raw).spec(raw)
        keep = args.keep or max(1, spec.num_grid_tokens // 9)
        out = Path(args.out)
        export_dir = export_model(BUNDLED_MODEL, out / "export", ExportOptions(keep=keep, layer=args.layer, force=True))
        pipe = Pipeline.load(export_dir, "ort-cpu")
        print(f"model: {BUNDLED_MODEL.relative_to(ROOT)} (bundled, trained on the synthetic shapes VQA task)")
        print(f"image: {image}\nquestion: {question}\nanswer: ", end="", flush=True)
        stream = pipe.generate(image, question, max_new_tokens=8, stream=True)
        for piece in stream:
            print(piece, end="", flush=True)
        result = stream.result
        print(f"\nexpected: {item['answer']}")
        kept_map = save_map(pipe, image, result.kept_indices, out / "kept-map.png")
        t = result.timings_ms()
        kv = pipe.manifest.kv
        print(f"kept {len(result.kept_indices)} of {spec.num_visual_tokens} visual tokens after layer {args.layer}; "
              f"KV cache {kv.nbytes / 1e6:.2f} MB (unpruned {kv.nbytes_unpruned / 1e6:.2f} MB)")
        print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if not isinstance(v, list))
              + f", decode/token {sum(t['decode']) / max(1, len(t['decode'])):.2f}")
        print(f"kept-token map: {kept_map}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
