"""Helpers shared by test modules (import as ``from tests._helpers import ...``)."""


def hf_inputs(processor, image, prompt):
    """What the model's own processor gives for one image and one question, as torch tensors (for ``generate``)."""
    import torch

    from topv.families.llava import LlavaProcessor

    return {k: torch.from_numpy(v) for k, v in LlavaProcessor(processor).encode(image, prompt).items()}


# How far runtimes may move TopV's ranking key for the same request (measured by tests/export/test_kept_agreement.py,
# which asserts the bound); the product's own near-tie diagnosis uses the same number.
from topv.pruning.selection import KEY_FLOAT32_NOISE as KEY_NOISE  # noqa: E402
from topv.pruning.selection import KEY_NEAR_TIE as KEPT_MARGIN  # noqa: E402

# A kept set is compared exactly only when its boundary margin is at least KEPT_MARGIN (4x that bound, 24x the
# largest shift measured).


def assert_kept_decided(key, keep, config=None, what="this request"):
    """Assert that the kept set of a solve is decided by its scores, not by rounding (the boundary margin of the
    ranking key ``key`` is at least :data:`KEPT_MARGIN`), and return the margin. Call it before comparing kept
    indices exactly; a case that fails it is a near-tie and needs another seed or image, or a test of the tie rule."""
    from topv.pruning.selection import boundary_margin

    margin = boundary_margin(key, keep, config)
    assert margin >= KEPT_MARGIN, (f"{what}: TopV's boundary margin is {margin:.3g} < {KEPT_MARGIN:g}, a near-tie that "
                                   "float32 rounding could decide; pick another seed or image for an exact comparison")
    return margin


# float32 logits of the same request on different kernels (ONNX Runtime against the reference, teacher forced, in
# the export check's validation.json) differ by at most ~3e-5 on logits of magnitude ~5 here (6e-6 relative). A
# greedy step is decided when its top-1/top-2 margin exceeds 1e-4 * max|logit| + 1e-5, 15x or more above that.
LOGIT_MARGIN_RTOL, LOGIT_MARGIN_ATOL = 1e-4, 1e-5


def assert_tokens_decided(logits, what="this generation"):
    """Assert that greedy tokens chosen from ``logits`` (one ``(V,)`` array per step) are decided by the model, not by
    rounding: each step's top-1/top-2 margin exceeds ``LOGIT_MARGIN_RTOL * max|logit| + LOGIT_MARGIN_ATOL``. Call it
    before comparing greedy tokens across kernels exactly. Returns the smallest margin."""
    import numpy as np

    smallest = float("inf")
    for step, row in enumerate(logits):
        row = np.asarray(row, dtype=np.float64).ravel()
        top2 = np.sort(row)[-2:]
        margin, bound = float(top2[1] - top2[0]), LOGIT_MARGIN_RTOL * float(np.abs(row).max()) + LOGIT_MARGIN_ATOL
        assert margin > bound, (f"{what}: step {step}'s top-1/top-2 logit margin {margin:.3g} <= {bound:.3g}, a near-tie that "
                                "float32 rounding could decide; pick another seed or prompt for an exact comparison")
        smallest = min(smallest, margin)
    return smallest


def reference_trace(model, image, prompt, *, keep=None, layer=2, steps=32, config=None, processor=None):
    """The PyTorch reference's greedy run, for margin checks: ``{"tokens", "logits" (one (V,) array per step),
    "kept", "key" (TopV's ranking key, None without pruning)}``. ``model`` is a model or a checkpoint folder;
    ``processor`` (default: the folder's) may be an export's own (Qwen: its fixed image size)."""
    import torch

    from topv.reference.loading import load_model, model_family
    from topv.reference.pipeline import ReferencePipeline

    if not hasattr(model, "config"):
        model, loaded = load_model(model)
        processor = processor or loaded
    inputs = model_family(model).wrap_processor(processor).encode(image, prompt)
    pipe = ReferencePipeline(model, layer=layer, keep=keep, config=config)
    from topv.sampling import stop_ids

    stops = stop_ids(getattr(model.generation_config, "eos_token_id", None))
    with torch.no_grad():
        state = pipe.prefill(torch.from_numpy(inputs["input_ids"]), inputs)
        logits, tokens = [state.logits[0].float().numpy()], []
        for step in range(steps):
            tokens.append(int(logits[-1].argmax()))
            if tokens[-1] in stops or step == steps - 1:
                break
            logits.append(pipe.decode_step(state, tokens[-1], step)[0].float().numpy())
    key = None if state.scores is None else state.scores.double().numpy()
    return {"tokens": tokens, "logits": logits, "kept": state.kept_indices, "key": key}


def assert_decided(trace, keep=None, config=None, what="this request"):
    """:func:`assert_kept_decided` (when the trace pruned) and :func:`assert_tokens_decided` on a reference trace."""
    if trace["key"] is not None:
        assert_kept_decided(trace["key"], keep, config, what)
    assert_tokens_decided(trace["logits"], what)


def export_decided(pipe, image, prompt, tokens):
    """Whether ``pipe``'s (an exported pipeline's) result for this request is decided by its scores, not by rounding:
    ``(decided, why)``, from its own kept-set margin and its logits' margins teacher forced with ``tokens``."""
    from topv.export.validate import exported_scores, teacher_forced_logits

    inputs = pipe.prepare_inputs(image, prompt)
    logits, _ = teacher_forced_logits(pipe, inputs, list(tokens))
    manifest = pipe.manifest
    try:
        assert_tokens_decided(logits, prompt)
        if manifest.pruning.enabled:
            key = exported_scores(pipe, inputs, manifest.spec.grid_hw, manifest.pruning.config)
            assert_kept_decided(key, manifest.pruning.keep, manifest.pruning.config, prompt)
    except AssertionError as exc:
        return False, str(exc)
    return True, ""


def assert_export_decided(pipe, image, prompt, tokens, what="this request"):
    """Before comparing another runtime's tokens and kept tokens with ``pipe``'s (usually ort-cpu) exactly."""
    decided, why = export_decided(pipe, image, prompt, tokens)
    assert decided, f"{what}: {why}"
