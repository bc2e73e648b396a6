"""The export's self-check, written to ``validation.json``:

1. graph vs module: each ONNX graph, run by ONNX Runtime on the feeds its PyTorch module saw in the graph
   chain, at two prompt lengths (a dynamic axis traced as a constant is caught). Floats: max |error| within
   ``rtol * max|reference| + atol`` (fp32: rtol 1e-3, far above float32 rounding accumulated over the
   layers; fp16: 3e-2, float16's epsilon is 9.8e-4). Integer outputs (kept indices, positions) must be equal.
2. modules vs the PyTorch reference pipeline (transformers' own modules): prefill logits, kept indices
   and one decode step.
3. a short generation through the exported folder vs ``topv.generate``: the same kept indices, and
   decode logits under teacher forcing (the reference's tokens fed to both) within the dtype's tolerance
   at every step. float32 also requires the same greedy tokens; lower precisions require greedy agreement
   only where the reference's top-1/top-2 margin exceeds the tolerance, and report the rest (random
   weights give near-tied logits that float16 rounding may flip). Below float32 the kept set may also differ
   at a near-tie of TopV's scores (:func:`kept_near_tie`); the generation is then compared with the reference
   given the export's kept tokens, and the difference is reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from topv.artifact import names as n
from topv.runtime.chain import Call, GraphChain, Recorder

RTOL = {"fp32": 1e-3, "fp16": 3e-2}
ATOL = {"fp32": 1e-5, "fp16": 1e-3}


@dataclass
class OutputCheck:
    graph: str
    output: str
    prompt_tokens: int
    shape: list[int]
    max_abs_error: float
    max_abs_reference: float
    tolerance: float
    ok: bool

    def line(self) -> str:
        return (f"  [{'ok ' if self.ok else 'FAIL'}] {self.graph}/{self.output} (S={self.prompt_tokens}): max|err| "
                f"{self.max_abs_error:.3g} <= {self.tolerance:.3g} (max|ref| {self.max_abs_reference:.3g})")


def tolerance(reference: np.ndarray, dtype: str) -> float:
    return RTOL[dtype] * float(np.abs(reference).max(initial=0.0)) + ATOL[dtype]


def compare(graph: str, name: str, prompt_tokens: int, got: Any, want: Any, dtype: str) -> OutputCheck:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return OutputCheck(graph, name, prompt_tokens, list(got.shape), float("inf"), float("nan"), 0.0, False)
    if np.issubdtype(want.dtype, np.integer):
        err = float(np.abs(got.astype(np.int64) - want.astype(np.int64)).max(initial=0))
        return OutputCheck(graph, name, prompt_tokens, list(got.shape), err, float(np.abs(want).max(initial=0)), 0.0, err == 0)
    g, w = got.astype(np.float64), want.astype(np.float64)
    err = float(np.abs(g - w).max(initial=0.0))
    tol = tolerance(w, dtype)
    return OutputCheck(graph, name, prompt_tokens, list(got.shape), err, float(np.abs(w).max(initial=0.0)), tol,
                       bool(np.isfinite(g).all()) and err <= tol)


def _prompt_tokens(call: Call) -> int:
    return int(call.axes.get(n.SEQUENCE, 0))


def check_graphs(backend: Any, calls: list[Call], dtype: str) -> list[OutputCheck]:
    """Every recorded module call replayed on ``backend`` (ONNX Runtime), output by output."""
    checks = []
    for call in calls:
        got = backend.run(call.graph, {k: backend.asarray(v) for k, v in call.feeds.items()}, call.axes)
        for name, want in call.outputs.items():
            checks.append(compare(call.graph, name, _prompt_tokens(call), backend.numpy(got[name]), want, dtype))
    return checks


def check_against_reference(reference: Any, calls: list[Call], inputs: dict[str, Any],
                            dtype: str) -> tuple[list[OutputCheck], dict[str, Any] | None]:
    """The graph modules' chain (``calls`` of one prompt) against the reference pipeline on the same prompt.

    Below float32 a kept set that differs at a near-tie (:func:`kept_near_tie`, on the scores of the modules' own
    layer-K states) is followed: the reference is rerun with the modules' kept tokens and the report returned."""
    import torch

    first = {c.graph: c for c in reversed(calls)}
    ids = torch.from_numpy(inputs["input_ids"])
    state = reference.prefill(ids, inputs)
    seq = int(inputs["input_ids"].shape[1])
    near_tie, kept_checks = None, []
    if n.PRUNE in first:
        got = [int(i) for i in first[n.PRUNE].outputs[n.KEPT_INDICES][0]]
        if state.kept_indices is not None and got != list(state.kept_indices):
            scores = prune_scores(first[n.PRUNE], reference.spec.grid_hw, reference.config)
            near_tie = kept_near_tie(state.scores, scores, got, reference.keep,
                                     reference.config, reference.spec.num_extra_visual_tokens, dtype)
            if near_tie["explained"]:
                state = reference.prefill(ids, inputs, kept=got)
        kept_checks = [compare("reference", "kept_indices", seq, np.asarray(got, np.int64),
                               np.asarray(state.kept_indices, dtype=np.int64), dtype)]
    checks = [compare("reference", "prefill_logits", seq, first[n.PREFILL_TAIL].outputs[n.LOGITS], state.logits.float().cpu().numpy(), dtype)]
    decode = first[n.DECODE_STEP]
    logits = reference.decode_step(state, int(decode.feeds[n.INPUT_IDS][0, 0]), 0)
    checks += kept_checks + [compare("reference", "decode_logits", seq, decode.outputs[n.LOGITS], logits.float().cpu().numpy(), dtype)]
    return checks, near_tie


def prune_scores(call: Call, grid_hw: tuple[int, int], config: Any) -> np.ndarray:
    """TopV's scores of the layer-K states a prune call was fed."""
    import torch

    from topv.pruning import token_importance

    source, target = (torch.from_numpy(call.feeds[k]).float() for k in (n.PRUNE_SOURCE, n.PRUNE_TARGET))
    return token_importance(source, target, grid_hw, config, log=True)[0].numpy()


def exported_scores(pipe: Any, inputs: dict[str, np.ndarray], grid_hw: tuple[int, int], config: Any) -> np.ndarray:
    """TopV's scores of the export's own layer-K states (the prune graph's inputs in one exported prefill)."""
    recorder = Recorder(pipe.backend)
    _prefill(GraphChain.for_manifest(recorder, pipe.manifest), pipe.manifest, inputs)
    return prune_scores(recorder.first(n.PRUNE), grid_hw, config)


def _prefill(chain: GraphChain, manifest: Any, inputs: dict[str, np.ndarray]) -> tuple[Any, Any]:
    """One prefill of the processor's ``inputs`` through ``chain`` on a fresh state: ``(state, output)``."""
    state = chain.new_state()
    pixels = np.ascontiguousarray(inputs["pixel_values"], dtype=np.dtype(manifest.graphs[n.VISION].inputs[0].dtype))
    return state, chain.prefill(state, inputs["input_ids"], chain.vision(pixels))


def teacher_forced_logits(pipe: Any, inputs: dict[str, np.ndarray], tokens: list[int]) -> tuple[list[np.ndarray], list[int] | None]:
    """The exported chain's logits at every step when fed ``tokens`` (prefill logits first), and its kept indices."""
    chain = pipe.chain
    state, out = _prefill(chain, pipe.manifest, inputs)
    logits = [out.logits]
    for token in tokens[:-1]:
        logits.append(chain.decode(state, token))
    return logits, out.kept_indices


def kept_near_tie(want_scores: Any, got_scores: Any, got_kept: list[int], keep: int, config: Any, extra: int,
                  dtype: str) -> dict[str, Any]:
    """Why an export's kept set differs from the reference's, from TopV's keys (``want_scores``: the reference's,
    ``got_scores``: those of the export's own layer-K states).

    Below float32 the difference is *explained* (a precision effect) when (1) the export's kept set is exactly what
    TopV selects from its own keys (the selection itself is right), and (2) those keys are within the dtype's
    tolerance of the reference's (``rtol * max|key|``): two tokens whose reference keys are closer than that may swap
    across the keep boundary. The generation is then compared with the reference given the export's kept tokens.
    float32 is never explained: its kept set must equal the reference's; the report then says whether the reference
    itself sits on a near-tie (a boundary margin below ``KEY_NEAR_TIE``), which tokens tie and
    by how much, so the error can say what to do.
    """
    import torch

    from topv.pruning.selection import KEY_NEAR_TIE, boundary_margin, recovery_count, select_tokens, top_k_by_score

    ref, got = torch.as_tensor(np.asarray(want_scores, np.float32)), torch.as_tensor(np.asarray(got_scores, np.float32))
    own = list(range(extra)) + [extra + int(i) for i in select_tokens(got, keep, config)]
    delta = float((ref.double() - got.double()).abs().max())
    tol = RTOL[dtype] * float(ref.abs().max()) if dtype in RTOL else 0.0
    k_top = keep - recovery_count(keep, config.recovery_fraction, ref.numel())
    margin = boundary_margin(ref, keep, config)
    want_top, got_top = set(top_k_by_score(ref, k_top).tolist()), set(top_k_by_score(got, k_top).tolist())
    consistent = own == list(got_kept)
    return {"explained": dtype != "fp32" and consistent and delta <= tol, "selection_consistent": consistent,
            "score_perturbation": delta, "score_tolerance": tol, "boundary_margin": margin,
            "top_tokens_swapped": len(want_top ^ got_top) // 2, "dtype": dtype,
            "reference_only": sorted(extra + i for i in want_top - got_top),
            "export_only": sorted(extra + i for i in got_top - want_top),
            "near_tie": margin < KEY_NEAR_TIE, "near_tie_below": KEY_NEAR_TIE}


def near_tie_line(tie: dict[str, Any], whose: str) -> str:
    """The validation line for a :func:`kept_near_tie` report on the kept set of ``whose`` (the export, the modules)."""
    head = (f"  [{'info' if tie['explained'] else 'FAIL'}] kept indices of the {whose} differ from the reference's: "
            f"{tie['top_tokens_swapped']} top-scored token(s) swapped at the keep boundary (reference margin "
            f"{tie['boundary_margin']:.3g})")
    if tie.get("dtype") == "fp32":
        swap = f"token(s) {tie['reference_only']} (reference) against {tie['export_only']} ({whose})"
        if tie["near_tie"] and tie["selection_consistent"]:
            return (f"{head}: {swap}, whose TopV keys differ by only {tie['boundary_margin']:.3g}, less than the "
                    f"{tie['near_tie_below']:g} that float32 rounding on some runtime could span: this sample image is "
                    "a true tie, decided by rounding, not a wrong graph. Re-export with another --sample-image (a real "
                    "photo rather than a flat or mirror-symmetric one) or another --keep; requests on such images may "
                    "keep either token on any runtime.")
        return (f"{head}: {swap}, a margin above what float32 rounding spans ({tie['near_tie_below']:g}), and the "
                f"{whose}'s selection from its own keys is {'exact' if tie['selection_consistent'] else 'NOT exact'}: "
                "the exported pruning step computes something else than the reference. This is a bug; please report it with validation.json.")
    return (f"{head}; its scores are {tie['score_perturbation']:.3g} from the reference's (tolerance "
            f"{tie['score_tolerance']:.3g}) and its selection from them is {'exact' if tie['selection_consistent'] else 'NOT exact'}"
            + ("; what follows is compared with the reference given the same kept tokens" if tie["explained"] else ""))


def generation_check(got_tokens: list[int], got_kept: list[int] | None, forced: list[np.ndarray],
                     want_tokens: list[int], want_kept: list[int] | None, want_logits: list[np.ndarray],
                     dtype: str, near_tie: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str], bool]:
    """Compare a free-running and a teacher-forced exported generation with the reference's.

    ``near_tie`` (from :func:`kept_near_tie`, when the kept sets differed and the difference was explained) means
    ``want_*`` come from the reference given the export's kept tokens; ``want_kept`` is the reference's own set."""
    steps = []
    for step, (got, want) in enumerate(zip(forced, want_logits)):
        got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
        tol = tolerance(want, dtype)
        top2 = np.sort(want)[-2:]
        margin = float(top2[1] - top2[0]) if want.size > 1 else float("inf")
        steps.append({"step": step, "max_abs_error": float(np.abs(got - want).max()), "tolerance": tol, "margin": margin,
                      "decided": margin > tol, "argmax_equal": int(got.argmax()) == int(want.argmax())})
    logits_ok = all(s["max_abs_error"] <= s["tolerance"] for s in steps)
    decided_ok = all(s["argmax_equal"] for s in steps if s["decided"])
    undecided = [s["step"] for s in steps if not s["decided"]]
    tokens_equal = got_tokens == want_tokens
    kept_equal = got_kept == want_kept
    kept_ok = kept_equal or bool(near_tie and near_tie["explained"])
    strict = dtype == "fp32"
    ok = logits_ok and decided_ok and kept_ok and (tokens_equal or not strict)
    worst = max(steps, key=lambda s: s["max_abs_error"] / s["tolerance"]) if steps else None
    lines = []
    if worst:
        lines.append(f"  [{'ok ' if logits_ok else 'FAIL'}] generation: decode logits under teacher forcing, {len(steps)} steps, "
                     f"worst step {worst['step']} max|err| {worst['max_abs_error']:.3g} <= {worst['tolerance']:.3g}")
    lines.append(f"  [{'ok ' if decided_ok else 'FAIL'}] generation: greedy agreement at every step whose top-1/top-2 margin "
                 f"exceeds the tolerance ({len(steps) - len(undecided)} of {len(steps)}; near-ties at steps {undecided or 'none'})")
    mark = "ok " if tokens_equal else ("FAIL" if strict else "info")
    lines.append(f"  [{mark}] generation: {len(want_tokens)} free-running greedy tokens {'equal' if tokens_equal else 'differ from'} "
                 f"the PyTorch reference{'' if tokens_equal or strict else ' (allowed below float32: see the near-ties)'}")
    if want_kept is not None and (kept_equal or not near_tie):
        lines.append(f"  [{'ok ' if kept_equal else 'FAIL'}] kept indices {'equal' if kept_equal else 'mismatch'} to the reference "
                     f"({len(want_kept)} kept)")
    elif want_kept is not None:
        lines.append(near_tie_line(near_tie, "export"))
    report = {"tokens_exported": got_tokens, "tokens_reference": want_tokens, "kept_indices_exported": got_kept,
              "kept_indices_reference": want_kept, "tokens_equal": tokens_equal, "kept_indices_equal": kept_equal,
              "teacher_forced": steps, "strict_tokens": strict, "kept_near_tie": near_tie, "ok": ok}
    return report, lines, ok


def graph_lines(checks: list[OutputCheck]) -> list[str]:
    """One line per graph: how many outputs were compared and the worst error against its tolerance."""
    lines = []
    for graph in dict.fromkeys(c.graph for c in checks):
        mine = [c for c in checks if c.graph == graph]
        worst = max(mine, key=lambda c: (not c.ok, c.max_abs_error / c.tolerance if c.tolerance else c.max_abs_error))
        lines.append(f"  [{'ok ' if all(c.ok for c in mine) else 'FAIL'}] {graph}: {len(mine)} outputs compared; worst "
                     f"{worst.output} (S={worst.prompt_tokens}) max|err| {worst.max_abs_error:.3g} <= {worst.tolerance:.3g}")
    return lines


def summary(checks: list[OutputCheck]) -> dict[str, Any]:
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
