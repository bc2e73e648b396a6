"""Helpers shared by test modules (import as ``from tests._helpers import ...``)."""


def hf_inputs(processor, image, prompt):
    """What the model's own processor gives for one image and one question, as torch tensors (for ``generate``)."""
    import torch

    from topv.families.llava import LlavaProcessor

    return {k: torch.from_numpy(v) for k, v in LlavaProcessor(processor).encode(image, prompt).items()}
