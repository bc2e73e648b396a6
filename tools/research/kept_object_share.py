"""Which patches does each pruning method keep? Share of kept patches showing part of a shape, against the
image's own share, on a shapes-VQA split (a patch counts as "object" if any pixel differs from the
background colour at the image corner; the bundled task's shapes are patch-aligned).

    .venv/bin/python tools/research/kept_object_share.py --model models/topv-shapes-vqa \
        --data data/shapes-vqa/val.jsonl --limit 60 --keep 16,48 --json tools/research/results/kept-object-share-val.json

A method that keeps objects at less than the image's share is keeping background preferentially.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--keep", default="16,48")
    p.add_argument("--layer", type=int, default=2)
    p.add_argument("--methods", default="topv,fastv,random,uniform")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    import topv
    from topv.evaluation.evaluate import load_jsonl
    from topv.reference.loading import load_model, model_spec

    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    spec = model_spec(model)
    gh, gw = spec.grid_hw
    examples = load_jsonl(args.data, args.limit)
    # Each example's image and which of its patches show part of a shape, computed once.
    images, masks = [], []
    for e in examples:
        image = Image.open(e.image).convert("RGB").resize((spec.image_hw[1], spec.image_hw[0]), Image.NEAREST)
        a = np.asarray(image)
        ph, pw = a.shape[0] // gh, a.shape[1] // gw
        images.append(image)
        masks.append(np.array([(a[r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] != a[0, 0]).any()
                               for r in range(gh) for c in range(gw)]))
    image_share = float(np.mean([m.mean() for m in masks]))
    rows = {}
    for keep in [int(k) for k in args.keep.split(",")]:
        for method in args.methods.split(","):
            shares = []
            for e, image, obj in zip(examples, images, masks):
                res = topv.generate(model, processor, image, e.question, keep=keep, layer=args.layer, method=method,
                                    max_new_tokens=1)
                shares.append(float(obj[np.asarray(res.kept_indices)].mean()))
            rows[f"{method}@{keep}"] = float(np.mean(shares))
            print(f"{method:8s} keep {keep:4d}: object share of kept patches {np.mean(shares):.3f} "
                  f"(image: {image_share:.3f})", flush=True)
    result = {"model": args.model, "data": args.data, "n": len(examples), "layer": args.layer,
              "image_object_share": image_share, "kept_object_share": rows}
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
