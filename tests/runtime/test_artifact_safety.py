"""A crafted or damaged export folder cannot run code, make topv read outside it, or fail with a traceback."""

import json
import logging
import os
import shutil

import pytest

from topv.artifact.files import file_records
from topv.errors import ArtifactError, ChecksumMismatchError
from topv.runtime.cli import main as run_main
from topv.runtime.pipeline import Pipeline
from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(initializer_range=0.2)


@pytest.fixture(scope="module")
def source(exports):
    return exports.export("artifact-safety", SHAPE, keep=4, validate_tokens=2)


@pytest.fixture
def folder(source, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(source, dst)
    return dst


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _write(folder, manifest, relist=False):
    if relist:
        manifest["files"] = {k: v.to_json() for k, v in file_records(folder).items()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_processor_asking_to_run_code_is_refused(folder):
    config = folder / "processor" / "processor_config.json"
    data = json.loads(config.read_text())
    data["auto_map"] = {"AutoProcessor": "evil.EvilProcessor"}
    config.write_text(json.dumps(data))
    (folder / "processor" / "evil.py").write_text("raise SystemExit('this must never run')\n")
    _write(folder, _manifest(folder), relist=True)
    with pytest.raises(ArtifactError, match="never executes code"):
        Pipeline.load(folder)


@pytest.mark.parametrize("field,value", [
    (("graphs", "vision", "file"), "../outside/vision.onnx"),
    (("graphs", "vision", "file"), "/etc/passwd"),
    (("processor", "folder"), "../processor"),
    (("weights", "file"), "../weights.bin"),
])
def test_paths_outside_the_folder_are_refused(folder, field, value):
    manifest = _manifest(folder)
    target = manifest
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    _write(folder, manifest)
    with pytest.raises(ArtifactError, match="outside"):
        Pipeline.load(folder)


def test_a_listed_absolute_file_is_refused_before_it_is_read(folder):
    manifest = _manifest(folder)
    manifest["files"]["/etc/shadow"] = {"sha256": "0" * 64, "bytes": 1}
    _write(folder, manifest)
    with pytest.raises(ArtifactError, match="outside") as info:
        Pipeline.load(folder)
    assert "bytes" not in str(info.value) and "0000" not in str(info.value)  # nothing about the file leaks


def test_a_symlink_pointing_outside_is_refused(folder, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(folder / "vision.onnx", outside)
    (folder / "vision.onnx").unlink()
    os.symlink(outside, folder / "vision.onnx")
    with pytest.raises(ArtifactError, match="outside the export folder"):
        Pipeline.load(folder)


def test_a_file_the_graphs_read_must_be_listed(folder):
    manifest = _manifest(folder)
    del manifest["files"]["weights.bin"]
    _write(folder, manifest)
    with open(folder / "weights.bin", "r+b") as f:
        f.seek(100)
        f.write(b"corrupt")
    with pytest.raises(ArtifactError, match="does not list"):
        Pipeline.load(folder)


def test_an_unlisted_file_is_refused(folder):
    (folder / "extra.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ArtifactError, match="does not list"):
        Pipeline.load(folder)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.__setitem__("files", list(m["files"])), "files must be a JSON object"),
    (lambda m: m["files"]["weights.bin"].__setitem__("bytes", str(m["files"]["weights.bin"]["bytes"])), "must be an integer"),
    (lambda m: m["kv_cache"].__setitem__("capacity_tail", 999), "kv_cache.capacity_tail"),
    (lambda m: m["static_shapes"].__setitem__("max_new_tokens", 99), "does not match its graphs|kv_cache"),
    (lambda m: m.__setitem__("dtype", "fp16"), "kv_cache.dtype|does not match"),
    (lambda m: m["pruning"].__setitem__("layer", 0), "kv_cache|does not match|split"),
    (lambda m: m["model"]["spec"].__setitem__("num_layers", "4"), "spec"),
])
def test_malformed_or_edited_manifests_are_typed_errors(folder, edit, match):
    manifest = _manifest(folder)
    edit(manifest)
    _write(folder, manifest)
    with pytest.raises(ArtifactError, match=match):
        Pipeline.load(folder)


def test_a_manifest_that_is_not_an_object(folder, capsys):
    (folder / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(ArtifactError, match="must be a JSON object; found list"):
        Pipeline.load(folder)
    assert run_main([str(folder), "--image", "x.png", "--prompt", "w1"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_manifest_from_a_newer_topv_loads_with_a_warning(folder, caplog):
    manifest = _manifest(folder)
    manifest["topv_version"] = "99.0.0"
    _write(folder, manifest)
    with caplog.at_level(logging.WARNING, logger="topv"):
        Pipeline.load(folder)
    assert "newer than this topv" in caplog.text


@pytest.mark.parametrize("backend,options,match", [
    ("ort-cpu", {}, "cannot load decode_step.onnx"),
    ("ort-cpu", {"low_memory": True}, "outside the export folder"),  # topv maps the weights itself
    pytest.param("openvino", {}, "outside the export folder", marks=pytest.mark.skipif(
        __import__("importlib.util").util.find_spec("openvino") is None, reason="pip install 'topv[openvino]'")),
])
def test_external_data_outside_the_folder_is_a_typed_error(folder, tmp_path, backend, options, match):
    """ONNX Runtime refuses it by itself; OpenVINO's frontend and topv's own memory maps read the location a graph
    names, so topv checks it before either does."""
    import onnx

    model = onnx.load(str(folder / "decode_step.onnx"), load_external_data=False)
    shutil.copy(folder / "weights.bin", tmp_path / "weights.bin")
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(model, str(folder / "decode_step.onnx"))
    _write(folder, _manifest(folder), relist=True)
    with pytest.raises(ArtifactError, match=match):
        Pipeline.load(folder, backend, **options)


def test_the_verified_stamp_skips_rehashing_until_a_file_changes(folder, monkeypatch):
    import topv.artifact.files as files

    calls = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    Pipeline.load(folder)
    first = len(calls)
    assert first >= 5  # every file hashed once
    Pipeline.load(folder)
    assert len(calls) == first  # unchanged folder: the stamp spares the hashing
    data = bytearray((folder / "weights.bin").read_bytes())
    data[-1] ^= 0xFF  # same size, new content, new mtime
    (folder / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        Pipeline.load(folder)
    Pipeline.load(folder, verify_checksums=False)  # sizes only: loads (and says nothing about content)
