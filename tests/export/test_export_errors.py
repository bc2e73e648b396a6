"""Bad export requests fail early with typed errors; nothing is half written or overwritten."""

import json

import pytest

from topv.errors import (
    InputError,
    KeepOutOfRangeError,
    LayerOutOfRangeError,
    OutputExistsError,
    ToleranceError,
    UnsupportedModelError,
)
from topv.export.cli import main as export_main
from topv.export.exporter import ExportOptions, export_model
from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(initializer_range=0.2)  # 4x4 grid: 16 visual tokens, 4 layers


@pytest.fixture(scope="module")
def model_dir(exports):
    return exports.model_dir("errors-4x4", SHAPE)


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_existing_output_is_not_touched_without_force(model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="--force"):
        export_model(model_dir, out, ExportOptions(keep=4))
    assert (out / "mine.txt").read_text() == "keep me"
    assert _siblings(out) == ["out"]
    assert export_main([str(model_dir), str(out), "--keep", "4", "-q"]) == 2


def test_force_replaces_only_a_topv_export(model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a topv export"):
        export_model(model_dir, out, ExportOptions(keep=4, force=True, validate_tokens=2))
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    out.rmdir()
    export_model(model_dir, out, ExportOptions(keep=4, validate_tokens=2))
    first = json.loads((out / "manifest.json").read_text())["created"]
    export_model(model_dir, out, ExportOptions(keep=5, force=True, validate_tokens=2))
    assert json.loads((out / "manifest.json").read_text())["pruning"]["keep"] == 5
    assert first  # replaced by the new export
    assert _siblings(out) == ["out"]  # no temporary, backup or lock file left behind


@pytest.mark.parametrize(
    "options,error,message",
    [
        (dict(keep=17), KeepOutOfRangeError, r"between 1 and the number of visual tokens \(16\)"),
        (dict(keep=0), KeepOutOfRangeError, "between 1 and"),
        (dict(keep=4, layer=3), LayerOutOfRangeError, r"0\.\.2"),
        (dict(keep=4, layer=-1), LayerOutOfRangeError, r"0\.\.2"),
        (dict(keep=4, max_prompt_tokens=10), InputError, "too small: the image alone takes 16 tokens"),
        (dict(keep=4, max_prompt_tokens=2000, max_new_tokens=100), InputError, "exceeds the model's 2048 positions"),
    ],
)
def test_bad_requests(model_dir, tmp_path, options, error, message):
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        export_model(model_dir, out, ExportOptions(**options))
    assert list(tmp_path.iterdir()) == []  # nothing created, not even a temporary folder


def test_unsupported_architecture_lists_what_is_supported(tmp_path):
    src = tmp_path / "gpt2"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(UnsupportedModelError, match="supports LlavaForConditionalGeneration"):
        export_model(src, tmp_path / "out", ExportOptions())
    assert export_main([str(src), str(tmp_path / "out2"), "-q"]) == 2


def test_not_a_model_folder(tmp_path):
    from topv.errors import ArtifactError

    with pytest.raises(ArtifactError, match="config.json is missing"):
        export_model(tmp_path, tmp_path / "out", ExportOptions())


def test_failure_midway_leaves_nothing(model_dir, tmp_path, monkeypatch):
    import topv.export.stream as stream
    from topv.errors import ExportError

    def broken(*args, **kwargs):
        raise ExportError("simulated exporter crash")

    monkeypatch.setattr(stream, "_torch_export", broken)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="simulated"):
        export_model(model_dir, out, ExportOptions(keep=4))
    assert list(tmp_path.iterdir()) == []


def test_tolerance_miss_fails_with_numbers_and_keeps_the_partial_export(model_dir, tmp_path, monkeypatch):
    import topv.export.validate as validate

    monkeypatch.setitem(validate.RTOL, "fp32", 0.0)
    monkeypatch.setitem(validate.ATOL, "fp32", 0.0)
    out = tmp_path / "out"
    with pytest.raises(ToleranceError, match=r"max\|err\| .* <= 0 ") as info:
        export_model(model_dir, out, ExportOptions(keep=4, validate_tokens=0))
    assert not out.exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert len(partial) == 1 and (partial[0] / "validation.json").is_file()
    assert str(partial[0]) in str(info.value)
