"""float32 exports stay strict on the kept set; when the sample image is a true tie of TopV's keys, the error says
which tokens tie, by how much and what to do; a kept set that differs far from any tie is reported as a bug."""

import pytest
import torch

from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2)


def _swap_in_reference(monkeypatch, how):
    """The reference (not the graphs) ranks differently: its two boundary tokens swapped by 2e-9 (a true tie
    that rounding decides), or every token reversed (far from any tie)."""
    from tests.export.test_fp16_export import _boundary_swap
    from topv.pruning.selection import select_tokens
    from topv.reference.pipeline import ReferencePipeline

    real_select = ReferencePipeline.select

    def select(self, captured, offset, positions, spec=None):
        kept, key = real_select(self, captured, offset, positions, spec)
        key = torch.from_numpy(_boundary_swap(key, self.keep, self.config, 1e-9)) if how == "tie" else -key
        return [int(i) for i in select_tokens(key, self.keep, self.config)], key

    monkeypatch.setattr(ReferencePipeline, "select", select)


@pytest.mark.parametrize("how", ["tie", "far"])
def test_a_float32_kept_set_mismatch_is_diagnosed(exports, tmp_path, monkeypatch, how):
    from topv.errors import ExportError
    from topv.export.exporter import ExportOptions, export_model

    _swap_in_reference(monkeypatch, how)
    out = tmp_path / "export"
    with pytest.raises(ExportError) as err:
        export_model(exports.model_dir("fp16-6x6", SHAPE), out, ExportOptions(keep=10, layer=1))
    message = str(err.value)
    assert not out.exists()
    if how == "tie":
        assert "true tie" in message and "--sample-image" in message and "(reference) against" in message
        assert "whose TopV keys differ by only" in message
        assert message.splitlines()[1].startswith("  [FAIL] kept indices of the")  # the cause comes first
    else:
        assert "This is a bug" in message and "true tie" not in message
