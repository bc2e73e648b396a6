"""Qwen2-VL and Qwen2.5-VL: with pruning off the reference's greedy tokens equal ``generate()`` token for token;
with pruning on, kept tokens keep their 3-D positions and decoding continues where the unpruned sequence would."""

import numpy as np
import pytest
import torch
from PIL import Image

import topv
from topv.reference.pipeline import ReferencePipeline, cache_layer_lengths
from topv.testing.qwen import SHAPES, build_random_qwen

from tests._helpers import assert_tokens_decided

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = {
    "qwen2-vl-gqa": SHAPES["tiny-qwen2-vl"].replace(initializer_range=0.1),
    "qwen2-vl-mha": SHAPES["tiny-qwen2-vl"].replace(num_kv_heads=4, initializer_range=0.1),
    "qwen2.5-vl-gqa-windows": SHAPES["tiny-qwen2.5-vl"].replace(initializer_range=0.1),
    "qwen2.5-vl-mha-windows": SHAPES["tiny-qwen2.5-vl"].replace(num_kv_heads=4, initializer_range=0.1),
}
IMAGES = {"wide": (90, 130), "tall": (150, 60)}  # (height, width): two non-square token grids
PROMPT = "w3 w14 w15 w9 w26"


def _image(hw, seed=0):
    rng = np.random.RandomState(seed)
    arr = (rng.rand(*hw, 3) * 255).astype(np.uint8)
    arr[hw[0] // 4: hw[0] // 2, hw[1] // 3: 2 * hw[1] // 3] = [220, 40, 40]
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name, attn="sdpa"):
        if (name, attn) not in cache:
            cache[(name, attn)] = build_random_qwen(CONFIGS[name], seed=7, attn_implementation=attn)
        return cache[(name, attn)]

    return get


def _hf_tokens(model, processor, image, n):
    """``generate()``'s greedy tokens, after checking that each was decided by its logits, not by rounding (the
    reference runs the decoder layer by layer, other kernels than ``generate()``'s, so an exact comparison needs every
    top-1/top-2 margin above float32 noise)."""
    enc = processor.encode(image, PROMPT)
    inputs = {k: torch.from_numpy(v) for k, v in enc.items()}
    out = model.generate(**inputs, max_new_tokens=n, do_sample=False, repetition_penalty=1.0,
                         return_dict_in_generate=True, output_logits=True)
    assert_tokens_decided([row[0].float().numpy() for row in out.logits], f"generate() on {PROMPT!r}")
    return out.sequences[0, enc["input_ids"].shape[1]:].tolist(), enc


@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_tokens_equal_generate(models, name, image):
    model, processor = models(name)
    expected, enc = _hf_tokens(model, processor, _image(IMAGES[image]), 32)
    eos = set(model.generation_config.eos_token_id)
    assert len(expected) == 32 or expected[-1] in eos  # generate() stops at eos, and so does topv.generate
    assert len(set(expected)) > 2, "degenerate output would make this comparison weak"
    result = topv.generate(model, processor, _image(IMAGES[image]), PROMPT, keep=None, max_new_tokens=32)
    assert result.token_ids == expected and result.kept_indices is None


def test_eager_attention_too(models):
    model, processor = models("qwen2.5-vl-gqa-windows", "eager")
    expected, _ = _hf_tokens(model, processor, _image(IMAGES["wide"]), 16)
    assert topv.generate(model, processor, _image(IMAGES["wide"]), PROMPT, max_new_tokens=16).token_ids == expected


@pytest.mark.parametrize("name", ["qwen2-vl-gqa", "qwen2.5-vl-gqa-windows"])
def test_kept_tokens_keep_their_3d_positions(models, name):
    model, processor = models(name)
    enc = processor.encode(_image(IMAGES["wide"]), PROMPT)
    pipe = ReferencePipeline(model, layer=1, keep=5, method="topv")
    seen = []
    handle = pipe.lm.rotary_emb.register_forward_hook(lambda m, args, out: seen.append(args[1].clone()))
    try:
        state = pipe.prefill(torch.from_numpy(enc["input_ids"]), enc)
        pipe.decode_step(state, 7, 0)
        pipe.decode_step(state, 8, 1)
    finally:
        handle.remove()
    full = seen[0]
    assert full.shape[0] == 3  # (t, h, w)
    ids = enc["input_ids"][0]
    offset = int(np.flatnonzero(ids == model.config.image_token_id)[0])
    n = int((ids == model.config.image_token_id).sum())
    kept = state.kept_indices
    keep_pos = list(range(offset)) + [offset + i for i in kept] + list(range(offset + n, len(ids)))
    assert torch.equal(seen[1], full[..., keep_pos])  # layers after K see the kept tokens at their own positions
    # transformers' own positions for the unpruned prompt, and its decode rule: last position + 1 on all axes
    hf_pos, delta = model.model.get_rope_index(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["mm_token_type_ids"]),
                                               torch.from_numpy(enc["image_grid_thw"]))
    assert torch.equal(full, hf_pos)
    first = len(ids) + int(delta)
    assert [int(s.reshape(-1)[0]) for s in seen[2:]] == [first, first, first + 1, first + 1]
    assert all(torch.equal(s.reshape(-1), s.reshape(-1)[:1].expand(s.numel())) for s in seen[2:])  # equal on 3 axes
    lengths = cache_layer_lengths(state.cache)  # after two decode steps
    assert lengths[:2] == [len(ids) + 2] * 2 and set(lengths[2:]) == {len(ids) - n + 5 + 2}


def test_keep_larger_than_the_image_is_a_typed_error(models):
    from topv.errors import KeepOutOfRangeError

    model, processor = models("qwen2-vl-gqa")
    with pytest.raises(KeepOutOfRangeError, match="between 1 and the number of visual tokens"):
        topv.generate(model, processor, _image(IMAGES["tall"]), PROMPT, keep=500, max_new_tokens=2)
