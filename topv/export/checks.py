"""Running the export's self-check (``topv.export.validate``) on a finished, not yet published folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from topv.artifact.manifest import read_manifest
from topv.export import validate as v
from topv.memory import memory_note
from topv.runtime.backends.base import BackendOptions

log = logging.getLogger("topv.export")


def open_exported(folder: Path, job: Any, *, quantized: bool = False) -> Any:
    """A :class:`Pipeline` over the exported graphs with ONNX Runtime (CPU, or CUDA for ``--device cuda``).

    On the CPU the sessions hold every weight once (``low_memory``: ``weights.bin`` memory-mapped, shared by every
    session, no packed copies; float16 graphs unoptimized, so that no float32 copy of their weights is made)."""
    from topv.runtime.pipeline import Pipeline

    manifest = read_manifest(folder)
    on_gpu = job.options.device.startswith("cuda") and not quantized
    if on_gpu:
        from topv.runtime.backends.ort_cuda.backend import OrtCudaBackend as cls
    else:
        from topv.runtime.backends.ort.backend import OrtBackend as cls
    options = BackendOptions(threads=job.options.threads, device=job.options.device if on_gpu else None, cuda_graph=False,
                             low_memory=not on_gpu)
    return Pipeline(folder, manifest, cls.load(folder, manifest, options), job.processor)


def reference_greedy(job: Any, inputs: dict[str, Any], steps: int, kept: list[int] | None = None) -> tuple[Any, ...]:
    """The reference pipeline's greedy tokens, its logits before each of them, its kept indices and TopV scores
    (``kept``: follow these kept indices instead of its own selection)."""
    import torch

    from topv.reference.pipeline import ReferencePipeline
    from topv.sampling import stop_ids

    ref = ReferencePipeline(job.model, layer=job.layer, keep=job.keep, method="topv", config=job.options.config, spec=job.spec)
    stops = stop_ids(job.model.generation_config.eos_token_id if job.model.generation_config else None)
    with torch.no_grad():
        state = ref.prefill(torch.from_numpy(inputs["input_ids"]), inputs, kept=kept)
        logits, tokens = [state.logits[0].float().cpu().numpy()], []
        for step in range(steps):
            tokens.append(int(np.argmax(logits[-1])))
            if tokens[-1] in stops or step == steps - 1:
                break
            logits.append(ref.decode_step(state, tokens[-1], step)[0].float().cpu().numpy())
    return tokens, logits, state.kept_indices, state.scores


def validate_export(folder: Path, job: Any, calls: list[Any]) -> dict[str, Any]:
    """Modules vs reference and the reference's generation (PyTorch), then, with the PyTorch model released,
    graphs vs modules and the exported generation (ONNX Runtime); writes ``validation.json``.

    ``job.options.validate``: ``full`` all of it, ``graphs`` no generation, ``none`` nothing numeric."""
    from topv.reference.pipeline import ReferencePipeline

    dtype, mode = job.options.dtype, job.options.validate
    if mode == "none":
        job.release_model()
        report = {"ok": True, "dtype": dtype, "mode": mode, "lines": ["  [info] numeric validation skipped (--validate none)"]}
        (folder / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    reference = ReferencePipeline(job.model, layer=job.layer, keep=job.keep, method="topv", config=job.options.config, spec=job.spec)
    ref_checks, ref_tie = v.check_against_reference(reference, calls, job.samples[0], dtype)
    del reference
    log.info("      PyTorch modules checked against transformers (%s)", memory_note())
    steps = min(job.options.validate_tokens, job.shapes.max_new_tokens) if mode == "full" else 0
    inputs = job.samples[0]
    want = reference_greedy(job, inputs, steps) if steps else None
    if want is not None:
        log.info("      reference generation: %d tokens (%s)", len(want[0]), memory_note())
    job.release_model()  # ONNX Runtime maps weights.bin: the two never hold the weights at once
    log.info("      PyTorch model released (%s)", memory_note())
    pipe = open_exported(folder, job)
    checks = v.check_graphs(pipe.backend, calls, dtype)
    log.info("      every graph checked on ONNX Runtime (%s)", memory_note())
    lines = v.graph_lines(checks + ref_checks) + [c.line() for c in checks + ref_checks if not c.ok]
    if ref_tie:
        lines.append(v.near_tie_line(ref_tie, "graph modules"))
    ok = all(c.ok for c in checks + ref_checks)
    generation: dict[str, Any] = {"skipped": True, "mode": mode}
    if want is not None:
        generation, gen_lines, gen_ok, pipe = _check_generation(pipe, job, inputs, steps, want)
        lines += gen_lines
        ok = ok and gen_ok
    pipe.backend.close()
    report = {"ok": ok, "dtype": dtype, "mode": mode, "graphs": v.summary(checks),
              "reference": {**v.summary(ref_checks), "kept_near_tie": ref_tie}, "generation": generation, "lines": lines}
    (folder / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _check_generation(pipe: Any, job: Any, inputs: dict[str, Any], steps: int,
                      want: tuple[Any, ...]) -> tuple[dict[str, Any], list[str], bool, Any]:
    """The exported greedy generation and its teacher-forced logits against the reference's (``want``); returns the
    report, its lines, whether it passed, and the pipeline (reopened when the reference had to run again)."""
    dtype = job.options.dtype
    want_tokens, want_logits, want_kept, want_scores = want
    got = pipe.generate(job.image, job.options.sample_prompt, max_new_tokens=steps)
    near_tie = None
    if want_kept is not None and got.kept_indices != want_kept:  # fp32: diagnosed, never accepted
        near_tie = v.kept_near_tie(want_scores, v.exported_scores(pipe, inputs, job.spec.grid_hw, job.options.config),
                                   got.kept_indices, job.keep, job.options.config, job.spec.num_extra_visual_tokens, dtype)
        if near_tie["explained"]:  # compare what follows the selection with the reference given the same kept tokens
            folder = pipe.folder
            pipe.backend.close()  # the model comes back only while no session maps the weights
            del pipe
            job.reload_model()
            want_tokens, want_logits, _, _ = reference_greedy(job, inputs, steps, kept=got.kept_indices)
            job.release_model()
            pipe = open_exported(folder, job)
    forced, _ = v.teacher_forced_logits(pipe, inputs, want_tokens)
    generation, lines, ok = v.generation_check(got.token_ids, got.kept_indices, forced, want_tokens, want_kept,
                                               want_logits, dtype, near_tie)
    generation["prompt"] = job.options.sample_prompt
    return generation, lines, ok, pipe
