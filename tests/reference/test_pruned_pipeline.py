"""Pruning inside prefill: KV shrinks for layers > K, positions stay original, decode continues correctly."""

import pytest
import torch

import topv
from topv.errors import InputError, KeepOutOfRangeError, LayerOutOfRangeError
from tests._helpers import hf_inputs
from topv.testing.llava import LlavaShape, build_random_llava
from topv.reference.pipeline import ReferencePipeline, cache_bytes, cache_layer_lengths


@pytest.fixture(scope="module")
def model6():
    # 6x6 grid (36 visual tokens), 5 decoder layers, grouped-query attention.
    return build_random_llava(LlavaShape(num_layers=5, num_kv_heads=2, image_size=84, initializer_range=0.2), seed=3)


@pytest.mark.parametrize("method", ["topv", "fastv", "random", "uniform"])
@pytest.mark.parametrize("layer", [0, 2])
def test_kv_of_layers_after_k_shrinks_by_the_keep_ratio(model6, scene_image, method, layer):
    model, processor = model6
    inputs = hf_inputs(processor, scene_image, "w1 w2 w3")
    keep = 12
    pipe = ReferencePipeline(model, layer=layer, keep=keep, method=method)
    state = pipe.prefill(inputs["input_ids"], inputs)
    seq = inputs["input_ids"].shape[1]
    kept_len = seq - 36 + keep
    lengths = cache_layer_lengths(state.cache)
    assert lengths == [seq] * (layer + 1) + [kept_len] * (5 - layer - 1)
    nbytes = cache_bytes(state.cache)
    for i in range(layer + 1, 5):
        assert nbytes[i] * seq == nbytes[0] * kept_len  # bytes scale exactly with the kept length
    assert len(state.kept_indices) == keep and state.kept_indices == sorted(set(state.kept_indices))


def test_kept_tokens_keep_their_original_positions(model6, scene_image):
    model, processor = model6
    inputs = hf_inputs(processor, scene_image, "w1 w2 w3")
    pipe = ReferencePipeline(model, layer=1, keep=9, method="topv")
    seen = []
    handle = pipe.lm.rotary_emb.register_forward_hook(lambda m, args, out: seen.append(args[1].clone()))
    try:
        state = pipe.prefill(inputs["input_ids"], inputs)
        pipe.decode_step(state, 7, 0)
        pipe.decode_step(state, 8, 1)
    finally:
        handle.remove()
    ids = inputs["input_ids"][0]
    offset = int((ids == 4).nonzero()[0])
    seq = ids.numel()
    expected_tail = list(range(offset)) + [offset + i for i in state.kept_indices] + list(range(offset + 36, seq))
    assert seen[0][0].tolist() == list(range(seq))
    assert seen[1][0].tolist() == expected_tail
    # Decode continues at the original (unpruned) length in both segments.
    assert [s[0].tolist() for s in seen[2:]] == [[seq], [seq], [seq + 1], [seq + 1]]


def test_decode_equals_reprefill_of_the_pruned_sequence(model6, scene_image):
    """Decoding with the reduced cache gives the logits a fresh prefill of prompt+tokens gives.

    The fresh prefill runs on the prompt followed by the generated tokens with the same kept set, so
    any error in cache lengths, masks or decode positions shows up as a logit difference.
    """
    model, processor = model6
    inputs = hf_inputs(processor, scene_image, "w4 w5")
    pipe = ReferencePipeline(model, layer=2, keep=10, method="topv")
    state = pipe.prefill(inputs["input_ids"], inputs)
    tokens = [11, 12, 13]
    logits = None
    for step, tok in enumerate(tokens):
        logits = pipe.decode_step(state, tok, step)
    longer = torch.cat([inputs["input_ids"], torch.tensor([tokens])], dim=1)
    forced = ReferencePipeline(model, layer=2, keep=10, method="topv")
    forced.select = lambda captured, offset, positions, spec=None: (state.kept_indices, None)
    again = forced.prefill(longer, inputs)
    torch.testing.assert_close(logits, again.logits, rtol=1e-4, atol=1e-5)


def test_methods_keep_the_budget_and_differ(model6, scene_image):
    model, processor = model6
    kept = {}
    for method in ("topv", "fastv", "random", "uniform"):
        r = topv.generate(model, processor, scene_image, "w1 w2", keep=8, method=method, max_new_tokens=4)
        assert len(r.kept_indices) == 8
        kept[method] = tuple(r.kept_indices)
    assert len(set(kept.values())) >= 3
    assert kept["uniform"] == tuple(topv.uniform_selection((6, 6), 8).tolist())


def test_full_strategy_always_keeps_cls(scene_image):
    model, processor = build_random_llava(LlavaShape(vision_feature_select_strategy="full", image_size=84), seed=2)
    r = topv.generate(model, processor, scene_image, "w1", keep=5, max_new_tokens=3)
    assert r.kept_indices[0] == 0 and len(r.kept_indices) == 6  # CLS + 5 grid tokens
    assert r.kept_length == r.prompt_length - 37 + 6


def test_fastv_scores_match_eager_attention(model6, scene_image):
    """FastV's score equals the eager attention row of the last token at layer K, averaged over heads."""
    model, processor = model6
    eager, _ = build_random_llava(LlavaShape(num_layers=5, num_kv_heads=2, image_size=84, initializer_range=0.2),
                                  seed=3, attn_implementation="eager")
    inputs = hf_inputs(processor, scene_image, "w1 w2 w3")
    out = eager(**inputs, output_attentions=True)
    expected = out.attentions[2][0, :, -1].mean(0)
    pipe = ReferencePipeline(model, layer=2, keep=10, method="fastv")
    with pipe._capture_layer() as captured:
        pipe.prefill(inputs["input_ids"], inputs)
    got = pipe.fastv_scores(captured["attn_input"], pipe.family.position_ids(inputs["input_ids"], pipe.spec))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_bad_arguments_are_typed_errors(tiny_llava, scene_image):
    model, processor = tiny_llava
    with pytest.raises(LayerOutOfRangeError, match="0..2"):
        topv.generate(model, processor, scene_image, "w1", keep=4, layer=3)
    with pytest.raises(KeepOutOfRangeError, match="between 1 and the number of visual tokens \\(16\\)"):
        topv.generate(model, processor, scene_image, "w1", keep=17)
    with pytest.raises(InputError, match="method must be one of"):
        topv.generate(model, processor, scene_image, "w1", keep=4, method="sparsevlm")
    with pytest.raises(InputError, match="max_new_tokens"):
        topv.generate(model, processor, scene_image, "w1", max_new_tokens=0)
