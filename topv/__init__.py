"""topv: TopV visual-token pruning for vision-language models, exported to deployable graphs.

``import topv`` is light: torch, transformers and onnxruntime are imported only when a function that
needs them is first used.

Public API:
    topv.TopVConfig                 hyperparameters (no heavy imports)
    topv.sinkhorn(cost, a, b, eps, iters)
    topv.token_importance(source, target, grid_hw, config)
    topv.select_tokens(scores, keep, config)
    topv.generate(model, processor, image, prompt, *, keep=..., layer=..., method=...)
    topv.Pipeline                   an exported folder on a backend (``Pipeline.load(folder, backend)``)
"""

from __future__ import annotations

from topv._lazy import lazy_attributes
from topv._version import __version__
from topv.pruning.config import TopVConfig  # dataclasses only: no torch import

_LAZY = {
    "sinkhorn": "topv.pruning.sinkhorn",
    "token_importance": "topv.pruning.importance",
    "select_tokens": "topv.pruning.selection",
    "random_selection": "topv.pruning.baselines",
    "uniform_selection": "topv.pruning.baselines",
    "generate": "topv.reference.generate",
    "GenerationResult": "topv.reference.generate",
    "load_model": "topv.reference.loading",
    "Pipeline": "topv.runtime.pipeline",
}

__all__ = ["TopVConfig", "__version__", *_LAZY]
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
