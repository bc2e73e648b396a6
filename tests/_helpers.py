"""Helpers shared by test modules (import as ``from tests._helpers import ...``)."""


def hf_inputs(processor, image, prompt):
    """What the model's own processor gives for one image and one question, as torch tensors (for ``generate``)."""
    import torch

    from topv.families.llava import LlavaProcessor

    return {k: torch.from_numpy(v) for k, v in LlavaProcessor(processor).encode(image, prompt).items()}


# How far runtimes may move TopV's ranking key for the same request (measured by tests/export/test_kept_agreement.py,
# which asserts the bound); the product's own near-tie diagnosis uses the same number.
from topv.pruning.selection import KEY_FLOAT32_NOISE as KEY_NOISE  # noqa: E402

# A kept set is compared exactly only when its boundary margin is this far above that noise.
KEPT_MARGIN = 10 * KEY_NOISE


def assert_kept_decided(key, keep, config=None, what="this request"):
    """Assert that the kept set of a solve is decided by its scores, not by rounding (the boundary margin of the
    ranking key ``key`` is at least :data:`KEPT_MARGIN`), and return the margin. Call it before comparing kept
    indices exactly; a case that fails it is a near-tie and needs another seed or image, or a test of the tie rule."""
    from topv.pruning.selection import boundary_margin

    margin = boundary_margin(key, keep, config)
    assert margin >= KEPT_MARGIN, (f"{what}: TopV's boundary margin is {margin:.3g} < {KEPT_MARGIN:g}, a near-tie that "
                                   "float32 rounding could decide; pick another seed or image for an exact comparison")
    return margin


def assert_tokens_decided(logits, what="this generation"):
    """Assert that greedy tokens chosen from ``logits`` (one ``(V,)`` array per step) are decided by the model, not by
    rounding: each step's top-1/top-2 margin exceeds the float32 export tolerance of those logits (``rtol 1e-3 *
    max|logit| + 1e-5``, what the export check allows a runtime to differ). Returns the smallest margin."""
    import numpy as np

    from topv.export.validate import tolerance

    smallest = float("inf")
    for step, row in enumerate(logits):
        row = np.asarray(row, dtype=np.float64).ravel()
        top2 = np.sort(row)[-2:]
        margin, tol = float(top2[1] - top2[0]), tolerance(row, "fp32")
        assert margin > tol, (f"{what}: step {step}'s top-1/top-2 logit margin {margin:.3g} <= {tol:.3g}, a near-tie that "
                              "float32 rounding could decide; pick another seed or prompt for an exact comparison")
        smallest = min(smallest, margin)
    return smallest
