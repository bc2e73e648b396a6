"""fp16 exports keep norms, softmax and the TopV solve in float32 and still match the reference."""

import json

import onnx
import pytest
from onnx import TensorProto, shape_inference

from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(num_kv_heads=2, image_size=84, initializer_range=0.2)
FP32_OPS = {"Softmax", "ReduceMean", "LayerNormalization", "ReduceSum", "ReduceMax", "ReduceMin", "Exp", "Log"}


@pytest.fixture(scope="module")
def fp16_export(exports):
    return exports.export("fp16-6x6", SHAPE, keep=10, layer=1, dtype="fp16")


def _input_types(path):
    model = shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return model, types


def test_reductions_run_in_float32(fp16_export):
    manifest = json.loads((fp16_export / "manifest.json").read_text())
    seen = set()
    for entry in manifest["graphs"].values():
        model, types = _input_types(fp16_export / entry["file"])
        for node in model.graph.node:
            if node.op_type in FP32_OPS:
                seen.add(node.op_type)
                assert types[node.input[0]] == TensorProto.FLOAT, (entry["file"], node.op_type, node.name)
    assert {"Softmax", "ReduceMean", "LayerNormalization"} <= seen


def test_weights_and_cache_are_half(fp16_export):
    manifest = json.loads((fp16_export / "manifest.json").read_text())
    assert manifest["kv_cache"]["dtype"] == "float16"
    decode = {t["name"]: t["dtype"] for t in manifest["graphs"]["decode_step"]["inputs"]}
    assert decode["past_key.0"] == "float16"
    outputs = {t["name"]: t["dtype"] for t in manifest["graphs"]["decode_step"]["outputs"]}
    assert outputs["logits"] == "float32"  # the sampler gets float32 logits
    model = onnx.load(str(fp16_export / "prefill_tail.onnx"), load_external_data=False)
    big = [t for t in model.graph.initializer if t.dims and max(t.dims) >= 64]
    assert big and all(t.data_type == TensorProto.FLOAT16 for t in big)


def _assert_fp16_promise(generation):
    """What an fp16 export promises against the float32 reference: logits within fp16's tolerance at every step,
    the same greedy token wherever the reference's top-1/top-2 margin exceeds it, and the same kept set or a
    near-tie swap the check explained. Free-running tokens may part at an undecided step."""
    steps = generation["teacher_forced"]
    assert steps and all(s["max_abs_error"] <= s["tolerance"] for s in steps)
    assert all(s["argmax_equal"] for s in steps if s["decided"])
    assert generation["kept_indices_equal"] or generation["kept_near_tie"]["explained"]


def test_fp16_export_validates_against_the_fp16_reference(fp16_export):
    report = json.loads((fp16_export / "validation.json").read_text())
    assert report["ok"] and report["dtype"] == "fp16"
    _assert_fp16_promise(report["generation"])


def _boundary_swap(scores, keep, config, nudge):
    """``scores`` with the last top-scored token and the first one below it swapped by ``nudge`` around their midpoint."""
    import torch

    from topv.pruning.selection import recovery_count

    s = torch.as_tensor(scores, dtype=torch.float32).clone()
    k_top = keep - recovery_count(keep, config.recovery_fraction, s.numel())
    order = torch.sort(s, descending=True, stable=True).indices
    a, b = int(order[k_top - 1]), int(order[k_top])
    mid = float(s[a] + s[b]) / 2
    s[a], s[b] = mid - nudge, mid + nudge
    return s.numpy()


def test_kept_near_tie_is_explained_only_by_a_small_perturbation_and_an_exact_selection():
    import numpy as np
    import torch

    from topv.export.validate import kept_near_tie
    from topv.pruning import TopVConfig
    from topv.pruning.selection import select_tokens

    config, keep = TopVConfig(), 12
    got = np.random.default_rng(0).uniform(0.010, 0.012, 64).astype(np.float32)
    got_kept = [int(i) for i in select_tokens(torch.from_numpy(got), keep, config)]
    ref = _boundary_swap(got, keep, config, 1e-6)  # the reference ranks the two boundary tokens the other way
    assert [int(i) for i in select_tokens(torch.from_numpy(ref), keep, config)] != got_kept
    tie = kept_near_tie(ref, got, got_kept, keep, config, 0, "fp16")
    assert tie["explained"] and tie["top_tokens_swapped"] == 1 and tie["score_perturbation"] <= tie["score_tolerance"]
    assert not kept_near_tie(ref, got, got_kept, keep, config, 0, "fp32")["explained"]  # float32: kept sets must be equal
    wrong = sorted(set(got_kept) - {got_kept[0]} | {next(i for i in range(64) if i not in got_kept)})
    assert not kept_near_tie(ref, got, wrong, keep, config, 0, "fp16")["selection_consistent"]  # not what TopV selects
    far = got + np.where(np.arange(64) % 2, 0.002, -0.002).astype(np.float32)  # 17% of the largest score
    far_kept = [int(i) for i in select_tokens(torch.from_numpy(far), keep, config)]
    assert not kept_near_tie(ref, far, far_kept, keep, config, 0, "fp16")["explained"]


@pytest.mark.parametrize("swap", ["boundary", "everything"])
def test_fp16_export_follows_a_near_tie_in_the_kept_set(exports, tmp_path, monkeypatch, swap):
    """A reference whose TopV ranking differs from the export's. One swap at the keep boundary, counted as a near-tie
    (here whenever the export's selection is exact on its own scores; the tolerance itself is tested above): the
    export validates, the modules and the generation compared with the reference given their kept tokens, and
    validation.json says so for both. The reference keeping the lowest-scored tokens instead: far outside any
    tolerance, the export fails and leaves nothing behind."""
    import torch

    from topv.errors import ExportError
    from topv.export import validate
    from topv.export.exporter import ExportOptions, export_model
    from topv.pruning.selection import select_tokens
    from topv.reference.pipeline import ReferencePipeline

    real_select, real_tie = ReferencePipeline.select, validate.kept_near_tie

    def select(self, captured, offset, positions, spec=None):
        kept, scores = real_select(self, captured, offset, positions, spec)
        scores = torch.from_numpy(_boundary_swap(scores, self.keep, self.config, 1e-9)) if swap == "boundary" else -scores
        return [int(i) for i in select_tokens(scores, self.keep, self.config)], scores

    def tie(*args, **kwargs):
        report = real_tie(*args, **kwargs)
        return {**report, "explained": report["selection_consistent"]}

    monkeypatch.setattr(ReferencePipeline, "select", select)
    if swap == "boundary":
        monkeypatch.setattr(validate, "kept_near_tie", tie)
    model, out, options = exports.model_dir("fp16-6x6", SHAPE), tmp_path / "export", ExportOptions(keep=10, layer=1, dtype="fp16")
    if swap == "everything":
        with pytest.raises(ExportError):
            export_model(model, out, options)
        assert not out.exists()
        return
    export_model(model, out, options)
    report = json.loads((out / "validation.json").read_text())
    assert report["ok"] and report["reference"]["ok"]
    assert report["reference"]["kept_near_tie"]["top_tokens_swapped"] == 1  # the modules against the reference
    gen = report["generation"]
    assert not gen["kept_indices_equal"] and gen["kept_near_tie"]["explained"]  # the export against the reference
    assert gen["kept_near_tie"]["top_tokens_swapped"] == 1
    _assert_fp16_promise(gen)
