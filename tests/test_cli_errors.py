"""Bad input to any command is a typed error: status 2, one message saying what to do, no traceback, nothing
overwritten. And the edge cases that used to pass silently now say so."""

import json
import logging
import shutil

import pytest

import topv
from topv.errors import ConfigError, InputError
from topv.evaluation.cli import main as eval_main
from topv.export.cli import main as export_main
from topv.export.exporter import ExportOptions, export_model
from topv.runtime.cli import main as run_main
from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(initializer_range=0.2)


@pytest.fixture(scope="module")
def folder(exports):
    return exports.export("cli-errors", SHAPE, keep=4, validate_tokens=2)


@pytest.fixture(scope="module")
def image(tmp_path_factory, scene_image):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    scene_image.save(path)
    return path


def _status(main, argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without a usable CUDA device, whatever this one has."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("extra,text", [(["--seed", "-1"], "seed"), (["--device", "bogus"], "cpu, cuda or cuda:N"),
                                        (["--backend", "torch", "--device", "cuda"], "CUDA device")])
def test_run_argument_errors(folder, image, capsys, no_gpu, extra, text):
    code, out = _status(run_main, [str(folder), "--image", str(image), "--prompt", "w1", *extra], capsys)
    assert code == 2 and text in out.err


def test_export_on_cuda_without_a_gpu(exports, tmp_path, capsys, no_gpu):
    code, out = _status(export_main, [str(exports.model_dir("cli-errors", SHAPE)), str(tmp_path / "o"), "--device", "cuda"], capsys)
    assert code == 2 and "CUDA device" in out.err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["map", "sub"])
def test_a_bad_kept_map_path_fails_before_the_answer(folder, image, tmp_path, capsys, name):
    target = tmp_path / name
    if name == "sub":
        target.mkdir()
    code, out = _status(run_main, [str(folder), "--image", str(image), "--prompt", "w1", "--save-kept-map", str(target)], capsys)
    assert code == 2 and out.out == ""  # nothing was generated
    assert ".png" in out.err or "folder" in out.err


def test_the_kept_map_never_overwrites_the_input_or_a_users_file(folder, image, tmp_path, capsys):
    before = image.read_bytes()
    code, out = _status(run_main, [str(folder), "--image", str(image), "--prompt", "w1", "--save-kept-map", str(image)], capsys)
    assert code == 2 and "input" in out.err and image.read_bytes() == before
    mine = tmp_path / "holiday.png"
    shutil.copy(image, mine)
    code, out = _status(run_main, [str(folder), "--image", str(image), "--prompt", "w1", "--save-kept-map", str(mine)], capsys)
    assert code == 2 and "not written by topv" in out.err
    ours = tmp_path / "map.png"
    for _ in range(2):  # topv replaces its own map
        code, _ = _status(run_main, [str(folder), "--image", str(image), "--prompt", "w1", "--max-new-tokens", "2",
                                     "--save-kept-map", str(ours)], capsys)
        assert code == 0


def test_eval_outputs_never_truncate_the_data(exports, image, tmp_path, capsys):
    data = tmp_path / "val.jsonl"
    data.write_text(json.dumps({"image": str(image), "question": "w1", "answer": "w2"}) + "\n")
    before = data.read_text()
    model = str(exports.model_dir("cli-errors", SHAPE))
    for flag in ("--predictions", "--json"):
        code, out = _status(eval_main, [model, "--data", str(data), "--keep", "4", flag, str(data)], capsys)
        assert code == 2 and "input" in out.err
    assert data.read_text() == before


def test_a_truncated_checkpoint_is_a_typed_error(exports, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(exports.model_dir("cli-errors", SHAPE), model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, out = _status(export_main, [str(model), str(tmp_path / "o"), "--keep", "4", "-q"], capsys)
    assert code == 2 and "damaged" in out.err


def test_api_type_errors(tiny_llava, scene_image):
    model, processor = tiny_llava
    with pytest.raises(InputError, match="temperature must be a finite number"):
        topv.generate(model, processor, scene_image, "w1", temperature="0.7")
    with pytest.raises(ConfigError, match="max_prompt_tokens must be an integer >= 1"):
        ExportOptions(max_prompt_tokens=0)


def test_generate_samples_at_a_temperature_as_the_pipeline_does(tiny_llava, scene_image):
    model, processor = tiny_llava
    greedy = topv.generate(model, processor, scene_image, "w1", max_new_tokens=16)
    hot = [topv.generate(model, processor, scene_image, "w1", max_new_tokens=16, temperature=5.0, seed=s).token_ids
           for s in range(3)]
    assert any(h != greedy.token_ids for h in hot)  # temperature > 0 samples; no do_sample flag needed


def test_without_pruning_the_layer_plays_no_part(exports, scene_image, tmp_path):
    three = LlavaShape(num_layers=3, initializer_range=0.2)
    one = LlavaShape(num_layers=1, initializer_range=0.2)
    for name, shape in (("three-layers", three), ("one-layer", one)):
        model_dir = exports.model_dir(name, shape)
        out = export_model(model_dir, tmp_path / name, ExportOptions(validate_tokens=4))  # default layer 2
        assert json.loads((out / "manifest.json").read_text())["validation"]["ok"]
        result = topv.generate(str(model_dir), None, scene_image, "w1", keep=None, max_new_tokens=4)
        assert len(result.token_ids) == 4


def test_keeping_every_token_says_it_is_an_unpruned_export(exports, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="topv.export"):
        out = export_model(exports.model_dir("cli-errors", SHAPE), tmp_path / "o", ExportOptions(keep=16, validate_tokens=2))
    assert "without pruning" in caplog.text
    assert json.loads((out / "manifest.json").read_text())["pruning"]["enabled"] is False


def test_too_many_new_tokens_suggests_what_fits(folder, image):
    from topv.runtime.pipeline import Pipeline

    pipe = Pipeline.load(folder)
    with pytest.raises(InputError, match="re-export with --max-new-tokens 100"):
        pipe.generate(image, "w1", max_new_tokens=100)
    with pytest.raises(InputError, match=r"room for at most \d+ new tokens"):
        pipe.generate(image, "w1", max_new_tokens=5000)
