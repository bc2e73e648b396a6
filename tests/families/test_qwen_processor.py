"""The torchvision-free Qwen2-VL / Qwen2.5-VL processor equals transformers' own (pixels, ids, every array), its
fixed-resolution mode gives a static token count, its loader reads the layouts checkpoints ship and refuses broken
ones; the random-weight builders are deterministic and save folders transformers loads."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from topv.errors import ArtifactError, ConfigError, InputError
from topv.families.qwen_processing import QwenProcessor, load_qwen_processor, smart_resize
from topv.testing.qwen import CHAT_TEMPLATE, SHAPES, build_random_qwen, model_class, save_random_qwen

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCHS = {"qwen2_vl": "tiny-qwen2-vl", "qwen2_5_vl": "tiny-qwen2.5-vl"}
PROMPT = "Describe the image."


def _image(width, height, seed=0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    a = rng.randint(0, 256, size=(height, width, 3), dtype=np.uint8)
    a[..., 0] = (np.arange(width) * 255 // max(width - 1, 1)).astype(np.uint8)[None, :]  # structure for the resampler
    return Image.fromarray(a, "RGB")


# (W, H): square, non-square both ways, an upscale below min_pixels, H=70 (round half to even), a downscale.
SIZES = [(56, 56), (100, 60), (37, 91), (30, 20), (130, 70), (640, 480)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Both tiny checkpoints saved as folders: {arch: folder}."""
    root = tmp_path_factory.mktemp("qwen")
    return {arch: save_random_qwen(root / arch, name, seed=0) for arch, name in ARCHS.items()}


def _genuine_processor(folder, arch):
    """transformers' own Qwen2VLProcessor / Qwen2_5_VLProcessor, built without the video processor (whose class
    needs torchvision): construction only checks the argument classes, and the image path never uses video."""
    import transformers
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    base = {"qwen2_vl": transformers.Qwen2VLProcessor, "qwen2_5_vl": transformers.Qwen2_5_VLProcessor}[arch]

    class NoVideoProcessor(base):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return NoVideoProcessor(image_processor=Qwen2VLImageProcessorPil.from_pretrained(folder),
                            tokenizer=AutoTokenizer.from_pretrained(folder), video_processor=None,
                            chat_template=(folder / "chat_template.jinja").read_text())


def _torch(inputs):
    import torch

    return {k: torch.from_numpy(v) for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------------- equal to transformers
@pytest.mark.parametrize("max_pixels", [28 * 28 * 24, 12845056])
def test_pixels_bitwise_equal_to_transformers_image_processor(ckpt, max_pixels):
    from transformers import Qwen2VLImageProcessorPil

    folder = ckpt["qwen2_vl"]
    loaded = load_qwen_processor(folder)
    ours = QwenProcessor(loaded.tokenizer, dataclasses.replace(loaded.image_config, max_pixels=max_pixels),
                         loaded.chat_template)
    ref = Qwen2VLImageProcessorPil.from_pretrained(folder, max_pixels=max_pixels)
    for width, height in SIZES:
        image = _image(width, height)
        expected = ref(images=image, return_tensors="np")
        pixel_values, grid = ours.pixels(image)
        assert np.array_equal(grid, expected["image_grid_thw"]) and grid.dtype == np.int64
        assert pixel_values.dtype == np.float32 and np.array_equal(pixel_values, expected["pixel_values"]), (width, height)
        view = ours.model_view(image)
        assert view.dtype == np.uint8 and view.shape == (grid[0, 1] * 14, grid[0, 2] * 14, 3)


def test_smart_resize_matches_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    for h in range(28, 700, 13):
        for w in (28, 33, 70, 97, 224, 333, 1000):
            for lo, hi in ((3136, 12845056), (3136, 18816)):
                assert smart_resize(h, w, 28, lo, hi) == hf_smart_resize(h, w, 28, lo, hi)
    assert smart_resize(70, 70, 28, 3136, 12845056) == (56, 56)  # half to even
    with pytest.raises(InputError, match="aspect ratio"):
        smart_resize(10, 2100, 28, 3136, 12845056)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_encode_equals_the_genuine_processor(ckpt, arch):
    folder = ckpt[arch]
    ours, ref = load_qwen_processor(folder), _genuine_processor(folder, arch)
    for i, (width, height) in enumerate([(100, 60), (37, 91), (640, 480)]):
        image, prompt = _image(width, height, seed=i), ["Describe the image.", "What color is w7?", "How many?"][i]
        messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
        expected = ref.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="np")
        got = ours.encode(image, prompt)
        assert set(got) == set(expected), (set(got), set(expected))
        for key, value in got.items():
            want = np.asarray(expected[key])
            assert value.shape == want.shape and value.dtype == want.dtype and np.array_equal(value, want), key
        assert ours.format_prompt(prompt) == ref.apply_chat_template(messages, add_generation_prompt=True)
        assert int(got["mm_token_type_ids"].sum()) == int(np.prod(got["image_grid_thw"])) // 4


# ---------------------------------------------------------------------------------------------- fixed resolution
def test_fixed_image_hw_gives_a_static_token_count(ckpt):
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    folder = ckpt["qwen2_5_vl"]
    for hw in [(112, 168), (56, 56), (336, 224)]:
        proc = load_qwen_processor(folder, image_hw=hw)
        ref = Qwen2VLImageProcessorPil.from_pretrained(folder, max_pixels=hw[0] * hw[1])
        for width, height in [(640, 480), (20, 300), (100, 60), (hw[1], hw[0])]:
            image = _image(width, height)
            out = proc.encode(image, PROMPT)
            tokens = (hw[0] // 28) * (hw[1] // 28)
            assert int((out["input_ids"] == proc.image_token_id).sum()) == tokens
            assert out["image_grid_thw"].tolist() == [[1, hw[0] // 14, hw[1] // 14]]
            assert out["pixel_values"].shape == (4 * tokens, 3 * 2 * 14 * 14)
            assert proc.model_view(image).shape == (*hw, 3)
            # = transformers on the image resized to H x W the same way (its own resize is then the identity)
            resized = image.resize((hw[1], hw[0]), resample=Image.Resampling.BICUBIC)
            assert np.array_equal(out["pixel_values"], ref(images=resized, return_tensors="np")["pixel_values"])


@pytest.mark.parametrize("bad", [(100, 56), (56, 30), (0, 56), (56,), (56.0, 56), (True, 56), "56x56", (-28, 56)])
def test_image_hw_must_be_multiples_of_28(ckpt, bad):
    with pytest.raises(ConfigError, match="multiples of 28"):
        load_qwen_processor(ckpt["qwen2_vl"], image_hw=bad)


# ---------------------------------------------------------------------------------------------- loading and saving
def _copy(src, dst, drop=()):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def test_loads_each_chat_template_layout(ckpt, tmp_path):
    src = ckpt["qwen2_vl"]

    def custom(marker):
        return CHAT_TEMPLATE.replace("You are a helpful assistant.", marker)

    jinja = _copy(src, tmp_path / "jinja")
    (jinja / "chat_template.jinja").write_text(custom("J"))
    as_json = _copy(src, tmp_path / "json", drop=["chat_template.jinja"])
    (as_json / "chat_template.json").write_text(json.dumps({"chat_template": custom("S")}))
    in_tok = _copy(src, tmp_path / "tok", drop=["chat_template.jinja"])
    config = json.loads((in_tok / "tokenizer_config.json").read_text())
    (in_tok / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": custom("T")}))
    for folder, marker in ((jinja, "J"), (as_json, "S"), (in_tok, "T")):
        text = load_qwen_processor(folder).format_prompt(PROMPT)
        assert text.startswith(f"<|im_start|>system\n{marker}<|im_end|>\n"), (folder.name, text)
    none = _copy(src, tmp_path / "none", drop=["chat_template.jinja"])
    if "chat_template" in json.loads((none / "tokenizer_config.json").read_text()):
        pytest.fail("the saved tokenizer_config.json holds a chat template; this case would not test a missing one")
    with pytest.raises(ArtifactError, match="no chat template"):
        load_qwen_processor(none)


HUB_PREPROCESSOR = {  # Qwen/Qwen2.5-VL-3B-Instruct's preprocessor_config.json, with the tiny model's max_pixels
    "min_pixels": 3136, "max_pixels": 18816, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}


@pytest.mark.parametrize("layout", ["hub", "image processor save", "processor save"])
def test_loads_each_image_processor_layout(ckpt, tmp_path, layout):
    from transformers import Qwen2VLImageProcessorPil

    src = ckpt["qwen2_5_vl"]
    folder = _copy(src, tmp_path / "ckpt", drop=["preprocessor_config.json"])
    if layout == "hub":
        (folder / "preprocessor_config.json").write_text(json.dumps(HUB_PREPROCESSOR))
    else:  # transformers 5 writes size {shortest_edge, longest_edge} (pixel counts), no min_pixels / max_pixels
        Qwen2VLImageProcessorPil.from_pretrained(src).save_pretrained(tmp_path / "ip")
        saved = json.loads((tmp_path / "ip" / "preprocessor_config.json").read_text())
        assert "size" in saved and "max_pixels" not in saved
        if layout == "image processor save":
            (folder / "preprocessor_config.json").write_text(json.dumps(saved))
        else:  # processor.save_pretrained nests it in processor_config.json and writes no preprocessor_config.json
            (folder / "processor_config.json").write_text(json.dumps({"image_processor": saved,
                                                                      "processor_class": "Qwen2_5_VLProcessor"}))
    image = _image(640, 480)
    got, want = load_qwen_processor(folder).encode(image, PROMPT), load_qwen_processor(src).encode(image, PROMPT)
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("case, message", [
    ("no preprocessor", "no image processor settings"),
    ("not json", "not valid JSON"),
    ("string patch_size", "'patch_size' must be a positive integer"),
    ("bad mean", "'image_mean' must be a list of 3 numbers"),
    ("min above max", "'min_pixels' must be at most max_pixels"),
    ("other processor", "describes a 'CLIPImageProcessor'"),
    ("no resize", "'do_resize' must be true"),
    ("no tokenizer", "has no tokenizer"),
    ("auto_map", "asks to run code"),
    ("bad fixed size", "topv_image_hw is malformed"),
])
def test_broken_folders_are_refused(ckpt, tmp_path, case, message):
    folder = _copy(ckpt["qwen2_vl"], tmp_path / "ckpt")
    pre = folder / "preprocessor_config.json"
    config = json.loads(pre.read_text())
    edits = {"string patch_size": {"patch_size": "14"}, "bad mean": {"image_mean": [0.5, 0.5]},
             "min above max": {"min_pixels": 10 ** 9}, "other processor": {"image_processor_type": "CLIPImageProcessor"},
             "no resize": {"do_resize": False}, "auto_map": {"auto_map": {"AutoImageProcessor": "x.Y"}},
             "bad fixed size": {"topv_image_hw": [100, 56]}}
    if case == "no preprocessor":
        pre.unlink()
    elif case == "not json":
        pre.write_text("{min_pixels: 3")
    elif case == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    else:
        pre.write_text(json.dumps({**config, **edits[case]}))
    with pytest.raises(ArtifactError, match=message):
        load_qwen_processor(folder)


@pytest.mark.parametrize("prompt", ["<|image_pad|> what is this?", "see <|vision_start|>", "a <|video_pad|>",
                                    "", "   ", None, 3])
def test_prompts_with_placeholders_or_without_text_are_refused(ckpt, prompt):
    proc = load_qwen_processor(ckpt["qwen2_vl"])
    with pytest.raises(InputError, match="placeholder|non-empty string"):
        proc.encode(_image(56, 56), prompt)


@pytest.mark.parametrize("image_hw", [None, (84, 112)])
def test_save_then_load_gives_identical_encodings(ckpt, tmp_path, image_hw):
    proc = load_qwen_processor(ckpt["qwen2_5_vl"], image_hw=image_hw)
    proc.save(tmp_path / "saved")
    again = load_qwen_processor(tmp_path / "saved")
    assert again.image_hw == proc.image_hw and again.image_config == proc.image_config
    assert again.chat_template == proc.chat_template and again.processor_class == "Qwen2_5_VLProcessor"
    for width, height in [(100, 60), (640, 480)]:
        a, b = proc.encode(_image(width, height), PROMPT), again.encode(_image(width, height), PROMPT)
        assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert not (tmp_path / "saved" / "processor_config.json").exists()
    if image_hw is not None:
        with pytest.raises(ConfigError, match="fixed to 84x112"):
            load_qwen_processor(tmp_path / "saved", image_hw=(56, 56))


# ---------------------------------------------------------------------------------------------- random checkpoints
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_random_models_generate_deterministically(arch):
    import torch

    runs = []
    for _ in range(2):
        model, proc = build_random_qwen(ARCHS[arch], seed=0)
        assert isinstance(proc, QwenProcessor) and type(model).__name__ == model_class(arch).__name__
        inputs = proc.encode(_image(100, 60), PROMPT)
        with torch.no_grad():
            out = model.generate(**_torch(inputs), max_new_tokens=8, do_sample=False)
        runs.append(out[0, inputs["input_ids"].shape[1]:].tolist())
        assert len(runs[-1]) >= 1
        proc.tokenizer.decode(runs[-1], skip_special_tokens=True)
    assert runs[0] == runs[1]
    other, _ = build_random_qwen(ARCHS[arch], seed=1)
    assert not torch.equal(other.lm_head.weight, model.lm_head.weight)
    assert model.config.model_type == arch
    assert model.config.text_config.model_type == SHAPES[ARCHS[arch]].text_model_type
    assert model.config.vision_config.model_type == SHAPES[ARCHS[arch]].vision_model_type


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_saved_checkpoint_is_laid_out_like_a_released_one(ckpt, arch):
    import torch

    folder = ckpt[arch]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= names
    assert "processor_config.json" not in names
    generation = json.loads((folder / "generation_config.json").read_text())
    assert not {"repetition_penalty", "do_sample", "temperature", "top_k", "top_p"} & set(generation)
    assert (folder / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    loaded = model_class(arch).from_pretrained(folder, local_files_only=True).eval()
    built, proc = build_random_qwen(ARCHS[arch], seed=0)
    for key, value in built.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    inputs = load_qwen_processor(folder).encode(_image(37, 91), PROMPT)
    fresh = proc.encode(_image(37, 91), PROMPT)
    assert all(np.array_equal(inputs[k], fresh[k]) for k in fresh)
    with torch.no_grad():
        a = loaded.generate(**_torch(inputs), max_new_tokens=4, do_sample=False)
        b = built.generate(**_torch(inputs), max_new_tokens=4, do_sample=False)
    assert torch.equal(a, b)


def test_real_architecture_shapes_have_the_published_sizes():
    import torch

    from topv.testing.qwen import SPECIAL_TOKENS, qwen_config

    ids = {t: 151643 + i for i, t in enumerate(SPECIAL_TOKENS)}
    for name, billions in (("qwen2.5-vl-3b", 3.755), ("qwen2.5-vl-7b", 8.292)):
        shape = SHAPES[name]
        with torch.device("meta"):
            model = model_class(shape.arch)(qwen_config(shape, ids))
        assert abs(sum(p.numel() for p in model.parameters()) / 1e9 - billions) < 0.005, name
        assert (shape.text_model_type, shape.vision_model_type) == ("qwen2_5_vl_text", "qwen2_5_vl_vision")
        assert shape.family == "qwen2_vl"
