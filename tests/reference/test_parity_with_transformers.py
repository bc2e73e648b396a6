"""With pruning off, the reference pipeline's greedy tokens equal ``model.generate()`` token for token."""

import pytest

import topv
from tests._helpers import assert_tokens_decided, hf_inputs
from topv.testing.llava import EOS_ID, LlavaShape, build_random_llava

CONFIGS = {
    "llama-mha-default-4x4": LlavaShape(initializer_range=0.2),
    "llama-gqa-default-4x4": LlavaShape(num_kv_heads=2, initializer_range=0.2),
    "llama-mha-full-4x4": LlavaShape(vision_feature_select_strategy="full", initializer_range=0.2),
    "llama-gqa-full-6x6": LlavaShape(num_kv_heads=1, image_size=84, vision_feature_select_strategy="full", initializer_range=0.2),
    "llama-gqa-default-8x8-p8": LlavaShape(num_heads=8, num_kv_heads=2, image_size=64, patch_size=8, initializer_range=0.2),
    "qwen2-gqa-default-4x4": LlavaShape(text_model_type="qwen2", num_kv_heads=2, initializer_range=0.2),
    "dinov2-llama-gqa-tied-4x4": LlavaShape(vision_model_type="dinov2", vision_feature_layer=-1, image_size=56, patch_size=14,
                                            hidden_size=96, num_heads=6, num_kv_heads=2, tie_word_embeddings=True,
                                            initializer_range=0.2),
    "siglip-mistral-gqa-full-4x4": LlavaShape(vision_model_type="siglip_vision_model", vision_feature_select_strategy="full",
                                              text_model_type="mistral", num_kv_heads=2, initializer_range=0.2),
}


def _hf_tokens(model, processor, image, prompt, n):
    """``generate()``'s greedy tokens, after checking that each was decided by its logits, not by rounding (our
    reference runs other kernels, so an exact comparison needs every top-1/top-2 margin above float32 noise)."""
    inputs = hf_inputs(processor, image, prompt)
    out = model.generate(**inputs, max_new_tokens=n, do_sample=False, return_dict_in_generate=True, output_logits=True)
    assert_tokens_decided([row[0].float().numpy() for row in out.logits], f"generate() on {prompt!r}")
    return out.sequences[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_greedy_tokens_equal_generate(name, attn, scene_image):
    model, processor = build_random_llava(CONFIGS[name], seed=7, attn_implementation=attn)
    prompt = "w3 w14 w15 w9 w26"
    expected = _hf_tokens(model, processor, scene_image, prompt, 32)
    assert len(expected) == 32 or expected[-1] == EOS_ID
    assert len(set(expected)) > 3, "degenerate model output would make this comparison weak"
    for method in ("topv", "none"):
        result = topv.generate(model, processor, scene_image, prompt, keep=None, method=method, max_new_tokens=32)
        assert result.token_ids == expected
        assert result.kept_indices is None
    # keep = every visual token is also "no pruning".
    n = (CONFIGS[name].image_size // CONFIGS[name].patch_size) ** 2
    full = topv.generate(model, processor, scene_image, prompt, keep=n, max_new_tokens=32)
    assert full.token_ids == expected


def test_model_directory_is_loaded_with_its_processor(tiny_llava, tiny_llava_dir, scene_image):
    model, processor = tiny_llava
    expected = _hf_tokens(model, processor, scene_image, "w1 w2", 12)
    result = topv.generate(str(tiny_llava_dir), None, scene_image, "w1 w2", max_new_tokens=12)
    assert result.token_ids == expected
    assert result.text == processor.tokenizer.decode(expected, skip_special_tokens=True)


def test_prompt_format_without_chat_template(tiny_llava, scene_image):
    model, processor = tiny_llava
    processor.chat_template, saved = None, processor.chat_template
    try:
        inputs = hf_inputs(processor, scene_image, "w5 w6")
        ids = inputs["input_ids"][0].tolist()
        assert ids[-2:] == processor.tokenizer.convert_tokens_to_ids(["w5", "w6"])
        result = topv.generate(model, processor, scene_image, "w5 w6", max_new_tokens=8)
        assert result.token_ids == _hf_tokens(model, processor, scene_image, "w5 w6", 8)
    finally:
        processor.chat_template = saved


def test_sampling_is_reproducible_and_differs_from_greedy(tiny_llava, scene_image):
    model, processor = tiny_llava
    kwargs = dict(max_new_tokens=16, temperature=1.5, top_p=0.95)
    a = topv.generate(model, processor, scene_image, "w1", seed=11, **kwargs)
    b = topv.generate(model, processor, scene_image, "w1", seed=11, **kwargs)
    c = topv.generate(model, processor, scene_image, "w1", seed=12, **kwargs)
    greedy = topv.generate(model, processor, scene_image, "w1", max_new_tokens=16)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids  # the seed matters
    assert a.token_ids != greedy.token_ids  # and it sampled


def test_stop_tokens_end_generation(tiny_llava, scene_image):
    model, processor = tiny_llava
    free = topv.generate(model, processor, scene_image, "w1 w2", max_new_tokens=10)
    stop = free.token_ids[3]
    first = free.token_ids.index(stop)
    stopped = topv.generate(model, processor, scene_image, "w1 w2", max_new_tokens=10, stop_token_ids=[stop])
    assert stopped.token_ids == free.token_ids[: first + 1]
