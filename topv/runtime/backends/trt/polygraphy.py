"""Real inputs for every graph of an export, in Polygraphy's ``--load-inputs`` format, and the commands to use them.

Random inputs are not valid for topv's prefill graphs (the prompt must hold the image tokens in one run) or
the decode step (its KV buffers must hold a prompt), so this runs one real request with ONNX Runtime on the
CPU and saves each graph's inputs as that request feeds them::

    python -m topv.runtime.backends.trt.polygraphy OUT_DIR --image scene.png --prompt "What is in the image?"

writes ``OUT_DIR-polygraphy/<graph>.inputs.json`` and prints, per graph, the ``polygraphy run`` commands
that compare TensorRT with ONNX Runtime on them (needs ``pip install polygraphy``; onnxruntime and
transformers for the request).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from topv.cli import add_kept_set_argument, run_cli, setup_logging
from topv.errors import BackendUnavailableError

TOLERANCES = {"fp32": (1e-3, 1e-3), "bf16": (5e-2, 5e-2), "fp16": (2e-2, 2e-2)}


def graph_inputs(folder: str | Path, image: Any, prompt: str) -> dict[str, dict[str, Any]]:
    """Each graph's input feed for one request (prefill and one decode step), from ONNX Runtime (numpy arrays)."""
    import numpy as np

    from topv.runtime.chain import GraphChain, Recorder
    from topv.runtime.pipeline import Pipeline

    pipe = Pipeline.load(folder, "ort-cpu")
    manifest = pipe.manifest
    recorder = Recorder(pipe.backend)
    chain = GraphChain.for_manifest(recorder, manifest)
    inputs = pipe.prepare_inputs(image, prompt)
    state = chain.new_state()
    out = chain.prefill(state, inputs["input_ids"], chain.vision(inputs["pixel_values"]))
    chain.decode(state, int(np.argmax(out.logits)))
    return {g: {name: recorder.first(g).feeds[name] for name in info.input_names} for g, info in manifest.graphs.items()}


def save_inputs(feeds: dict[str, dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Write ``<graph>.inputs.json`` (a one-iteration list, Polygraphy's ``save_json`` format)."""
    try:
        from polygraphy.json import save_json
    except ImportError as exc:
        raise BackendUnavailableError("Writing Polygraphy input files needs polygraphy: `pip install polygraphy`.") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for graph, feed in feeds.items():
        paths[graph] = out_dir / f"{graph}.inputs.json"
        save_json([feed], str(paths[graph]))
    return paths


def _shape_arg(shapes: dict[str, list[int]]) -> str:
    return " ".join(shlex.quote(f"{name}:[{','.join(str(d) for d in dims)}]") for name, dims in shapes.items())


def polygraphy_commands(folder: str | Path, manifest: Any, inputs: dict[str, Path], precision: str = "fp32",
                        kept_set: str = "float32") -> list[str]:
    """Per graph: ONNX Runtime vs. a TensorRT build of the ONNX file by Polygraphy, and (when topv-build ran)
    ONNX Runtime's saved outputs vs. topv's own engine. The graphs :func:`topv.precision.float32_graphs` keeps in
    float32 are built without the precision flag, as ``topv-build`` builds them."""
    from topv.engines.profiles import derive_profiles
    from topv.precision import float32_graphs

    float32 = float32_graphs(manifest.pruning.enabled, kept_set)
    folder = Path(folder)
    flag = {"fp16": " --fp16", "bf16": " --bf16", "fp32": ""}[precision]
    commands = []
    for graph, profile in derive_profiles(manifest).items():
        onnx = shlex.quote(str(folder / manifest.graphs[graph].file))
        data = shlex.quote(str(inputs[graph]))
        shapes = ""
        if profile.dynamic:
            dyn = {n: r for n, r in profile.inputs.items()}
            shapes = (
                f" --trt-min-shapes {_shape_arg({n: list(r.min) for n, r in dyn.items()})}"
                f" --trt-opt-shapes {_shape_arg({n: list(r.opt) for n, r in dyn.items()})}"
                f" --trt-max-shapes {_shape_arg({n: list(r.max) for n, r in dyn.items()})}"
            )
        built = "fp32" if graph in float32 else precision
        precision_flag = "" if graph in float32 else flag
        atol, rtol = TOLERANCES[built]
        tol = f"--atol {atol:g} --rtol {rtol:g}"
        ort_out = shlex.quote(str(Path(inputs[graph]).with_name(f"{graph}.onnxrt-outputs.json")))
        commands.append(f"polygraphy run {onnx} --onnxrt --trt{precision_flag}{shapes} --load-inputs {data} {tol}")
        commands.append(f"polygraphy run {onnx} --onnxrt --load-inputs {data} --save-outputs {ort_out}")
        engine = shlex.quote(str(folder / f"{graph}.engine"))
        commands.append(
            f"polygraphy run {engine} --model-type engine --trt --load-inputs {data} --load-outputs {ort_out} {tol}"
        )
    return commands


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m topv.runtime.backends.trt.polygraphy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="folder written by topv-export")
    p.add_argument("--image", required=True, help="an image file")
    p.add_argument("--prompt", default="What is in the image?", help="the question")
    p.add_argument("--save-dir", default=None,
                   help="where to write the input files (default: OUT_DIR-polygraphy, next to the export: an export folder "
                        "holds only the files its manifest lists)")
    p.add_argument("--precision", choices=tuple(TOLERANCES), default="fp32",
                   help="precision of the engines being checked; sets --fp16/--bf16 and the tolerances (default: fp32)")
    add_kept_set_argument(p, "--precision (as given to topv-build)")
    args = p.parse_args(argv)
    setup_logging(quiet=True)

    def body() -> int:
        from topv.artifact.manifest import read_manifest

        folder = Path(args.out_dir).resolve()
        manifest = read_manifest(folder)
        save_dir = Path(args.save_dir) if args.save_dir else folder.with_name(folder.name + "-polygraphy")
        paths = save_inputs(graph_inputs(folder, args.image, args.prompt), save_dir)
        for command in polygraphy_commands(folder, manifest, paths, args.precision, args.kept_set):
            print(command)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
