"""Training smoke test on a tiny config, prompt/label construction, and the evaluation helper."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from PIL import Image

from tools.data.shapes import render_scene, sample_example, vocabulary
from topv.testing.llava import build_processor, build_tokenizer
from tools.training.common import PRESETS, chat_prompt, encode_text, make_batch, pixel_values


@pytest.fixture(scope="module")
def processor():
    return build_processor(build_tokenizer(vocabulary()), PRESETS["shapes-vqa"])


def test_bundled_preset_constraints():
    shape = PRESETS["shapes-vqa"]
    assert (shape.image_size // shape.patch_size) ** 2 >= 144
    assert shape.vision_feature_select_strategy == "default"
    assert shape.num_layers >= 6
    assert shape.text_model_type == "llama" and shape.vision_model_type == "clip_vision_model"


def test_prompt_is_the_chat_template(processor):
    q = "what color is the shape in the top left ?"
    assert chat_prompt(processor, q) == f"USER: <image> {q} ASSISTANT:"


def test_encode_text_equals_the_processor(processor):
    rng = random.Random(0)
    for _ in range(5):
        scene, q = sample_example(rng)
        image = render_scene(scene).convert("RGB")
        ref = processor(images=image, text=chat_prompt(processor, q.question) + f" {q.answer} </s>", return_tensors="pt")
        ids = encode_text(processor, q.question, q.answer, 144)
        assert ids == ref["input_ids"][0].tolist()
        assert ids[-1] == processor.tokenizer.eos_token_id
        assert processor.tokenizer.unk_token_id not in ids
        assert torch.equal(pixel_values(processor, [image]), ref["pixel_values"])


def test_pixel_values_falls_back_to_the_processor_for_other_sizes(processor):
    image = Image.new("RGB", (100, 80), (200, 10, 10))
    assert torch.allclose(pixel_values(processor, [image]), processor.image_processor([image], return_tensors="pt")["pixel_values"])


def test_labels_cover_the_answer_and_eos_only(processor):
    rng = random.Random(1)
    examples = [sample_example(rng) for _ in range(4)]
    batch = make_batch(processor, [render_scene(s) for s, _ in examples], [q.question for _, q in examples],
                       [q.answer for _, q in examples], 144)
    tok = processor.tokenizer
    for i, (_, q) in enumerate(examples):
        labelled = batch.labels[i][batch.labels[i] != -100].tolist()
        assert labelled == [tok.convert_tokens_to_ids(q.answer), tok.eos_token_id]
        assert batch.input_ids[i, batch.answer_positions[i]].item() == tok.convert_tokens_to_ids("ASSISTANT:")
        assert batch.answer_ids[i].item() == labelled[0]
        n = int(batch.attention_mask[i].sum())
        assert (batch.input_ids[i, n:] == tok.pad_token_id).all()


def test_two_step_training_smoke(tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from tools.training.evaluate_shapes import evaluate
    from tools.training.train_shapes import build_parser, train
    from tools.data.writer import read_split, write_split

    write_split(tmp_path / "data", "val", 8, seed=1)
    out = tmp_path / "model"
    args = build_parser().parse_args([
        "--out", str(out), "--preset", "test-tiny", "--steps", "2", "--batch-size", "4", "--warmup", "1",
        "--val", str(tmp_path / "data" / "val.jsonl"), "--eval-every", "2", "--eval-samples", "8", "--log-every", "1",
    ])
    summary = train(args)
    losses = [h["loss"] for h in summary["history"] if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any("val_acc" in h for h in summary["history"])
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "training.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "training.json").read_text())["examples_seen"] == 8

    model = LlavaForConditionalGeneration.from_pretrained(out, local_files_only=True)
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    assert model.config.text_config.model_type == "llama"
    assert model.config.vision_config.model_type == "clip_vision_model"
    assert processor.tokenizer.eos_token == "</s>"
    assert chat_prompt(processor, "is there a red circle ?") == "USER: <image> is there a red circle ? ASSISTANT:"
    result = evaluate(model, processor, read_split(tmp_path / "data" / "val.jsonl")[:3], max_new_tokens=2)
    assert result["count"] == 3 and 0.0 <= result["accuracy"] <= 1.0
    assert {"question", "answer", "prediction", "correct", "type"} <= set(result["predictions"][0])


def test_training_is_deterministic(tmp_path):
    from tools.training.train_shapes import build_parser, train
    from safetensors.torch import load_file

    def run(name):
        args = build_parser().parse_args(["--out", str(tmp_path / name), "--preset", "test-tiny", "--steps", "2",
                                          "--batch-size", "2", "--questions-per-image", "2", "--val", "", "--threads", "1"])
        train(args)
        return load_file(tmp_path / name / "model.safetensors")

    a, b = run("a"), run("b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lr_schedule():
    from tools.training.train_shapes import build_parser, lr_at

    args = build_parser().parse_args(["--out", "x", "--steps", "100", "--warmup", "10", "--lr", "1e-3", "--min-lr-ratio", "0.1"])
    assert lr_at(0, args) == pytest.approx(1e-4)
    assert lr_at(9, args) == pytest.approx(1e-3)
    assert lr_at(99, args) == pytest.approx(1e-4, rel=0.01)
    assert all(lr_at(s, args) >= lr_at(s + 1, args) for s in range(10, 99))


def test_init_from_continues_from_saved_weights(tmp_path):
    """--init-from loads a saved checkpoint (a zero learning rate then leaves it unchanged), and a
    checkpoint of another shape is refused with the reason."""
    from safetensors.torch import load_file

    from tools.training.train_shapes import build_parser, train

    common = ["--preset", "test-tiny", "--steps", "1", "--batch-size", "2", "--questions-per-image", "2", "--val", "",
              "--threads", "1"]
    train(build_parser().parse_args(["--out", str(tmp_path / "a"), "--seed", "0", *common]))
    train(build_parser().parse_args(["--out", str(tmp_path / "b"), "--seed", "1", "--init-from", str(tmp_path / "a"),
                                     "--lr", "0", *common]))
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match="do not fit"):
        train(build_parser().parse_args(["--out", str(tmp_path / "c"), "--init-from", str(tmp_path / "a"),
                                         "--override", "hidden_size=48", *common]))


def test_aux_loss_is_learned_and_dropped_at_save(tmp_path):
    """--aux-weight trains a dense per-patch head next to the answer loss (its loss falls), and the saved
    checkpoint is a plain LLaVA: the same tensors as a run without it."""
    from safetensors.torch import load_file

    from tools.training.train_shapes import build_parser, train

    common = ["--preset", "test-tiny", "--override", "image_size=192", "--batch-size", "4", "--questions-per-image", "2",
              "--val", "", "--threads", "1", "--log-every", "5", "--warmup", "1", "--lr", "3e-3"]
    summary = train(build_parser().parse_args(["--out", str(tmp_path / "aux"), "--steps", "30", "--aux-weight", "1", *common]))
    aux = [h["aux_loss"] for h in summary["history"] if "aux_loss" in h]
    assert len(aux) == 6 and aux[-1] < 0.5 * aux[0], aux
    train(build_parser().parse_args(["--out", str(tmp_path / "plain"), "--steps", "1", *common]))
    with_aux, plain = load_file(tmp_path / "aux" / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    assert with_aux.keys() == plain.keys()
    assert all(with_aux[k].shape == plain[k].shape for k in plain)
