"""engines.json: round trip, atomic write, and the refusal of engines from another TensorRT or GPU."""

import json

import pytest

from topv.engines.engine_manifest import (
    ENGINE_MANIFEST_NAME,
    EngineManifest,
    EngineRecord,
    GpuInfo,
    check_compatible,
    check_matches_export,
    compatibility_problems,
    export_fingerprint,
    read_engine_manifest,
    verify_engine_files,
    write_engine_manifest,
)
from topv.errors import ArtifactError, ChecksumMismatchError, IncompatibleArtifactError
from topv.artifact.files import FileRecord, sha256_file

ORIN = GpuInfo("Orin", "8.7", 16 * 2**30)


def _manifest(tmp_path, **changes):
    engine = tmp_path / "vision.engine"
    engine.write_bytes(b"serialized engine")
    fields = dict(
        tensorrt_version="10.3.0",
        gpu=ORIN,
        precision="fp16",
        strongly_typed=False,
        engines={
            "vision": EngineRecord(
                file="vision.engine", onnx="vision.onnx", precision="fp16", profile={"dynamic": False, "inputs": {}},
                build_seconds=1.5, bytes=engine.stat().st_size, sha256=sha256_file(engine),
                peak_host_rss_bytes=2**30, peak_device_used_bytes=3 * 2**30,
            )
        },
        export={"files": {"vision.onnx": "a" * 64, "weights.bin": "b" * 64}},
    )
    fields.update(changes)
    return EngineManifest(**fields)


def test_round_trip_and_atomic_write(tmp_path):
    m = _manifest(tmp_path, peak_memory={"host_rss_bytes": 5}, total_build_seconds=2.0)
    path = write_engine_manifest(tmp_path, m)
    assert path.name == ENGINE_MANIFEST_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engines.json", "vision.engine"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["gpu"]["compute_capability"] == "8.7"
    assert data["engines"]["vision"]["peak_device_used_bytes"] == 3 * 2**30
    back = read_engine_manifest(tmp_path)
    assert back.to_json() == m.to_json()


def test_read_errors(tmp_path):
    with pytest.raises(ArtifactError, match="topv-build OUT_DIR"):
        read_engine_manifest(tmp_path)
    (tmp_path / ENGINE_MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_engine_manifest(tmp_path)
    (tmp_path / ENGINE_MANIFEST_NAME).write_text(json.dumps({"format": 99}))
    with pytest.raises(IncompatibleArtifactError, match="format 99"):
        read_engine_manifest(tmp_path)
    (tmp_path / ENGINE_MANIFEST_NAME).write_text(json.dumps({"format": 1}))
    with pytest.raises(ArtifactError, match="malformed|lacks"):
        read_engine_manifest(tmp_path)


@pytest.mark.parametrize(
    "version,gpu,reasons",
    [
        ("10.3.0", ORIN, []),
        ("10.7.0", ORIN, ["TensorRT 10.3.0"]),
        ("10.3.0", GpuInfo("NVIDIA A10", "8.6"), ["compute capability 8.7"]),
        ("10.3.0", GpuInfo("Orin (nvgpu)", "8.7"), ["built on a Orin"]),
        ("10.0.1", GpuInfo("NVIDIA H100", "9.0"), ["TensorRT 10.3.0", "compute capability 8.7"]),
    ],
)
def test_compatibility_is_a_plain_function(tmp_path, version, gpu, reasons):
    problems = compatibility_problems(_manifest(tmp_path), tensorrt_version=version, gpu=gpu)
    assert len(problems) == len(reasons)
    for problem, reason in zip(problems, reasons):
        assert reason in problem


def test_check_compatible_says_how_to_rebuild(tmp_path):
    with pytest.raises(IncompatibleArtifactError) as info:
        check_compatible(_manifest(tmp_path), tensorrt_version="10.7.0", gpu=ORIN, folder="/models/llava")
    assert "topv-build /models/llava --force" in str(info.value)
    check_compatible(_manifest(tmp_path), tensorrt_version="10.3.0", gpu=ORIN)  # same machine: no error


def test_engines_must_match_the_exported_graphs(tmp_path):
    from types import SimpleNamespace

    export = SimpleNamespace(
        graphs={"vision": SimpleNamespace(file="vision.onnx")},
        files={"vision.onnx": FileRecord("a" * 64, 1), "weights.bin": FileRecord("b" * 64, 1)},
        weights={"file": "weights.bin"},
    )
    assert export_fingerprint(export) == {"vision.onnx": "a" * 64, "weights.bin": "b" * 64}
    check_matches_export(_manifest(tmp_path), export)
    export.files["weights.bin"] = FileRecord("c" * 64, 1)  # re-exported after the build
    with pytest.raises(IncompatibleArtifactError, match="weights.bin changed"):
        check_matches_export(_manifest(tmp_path), export)
    export.files["weights.bin"] = FileRecord("b" * 64, 1)
    export.graphs["decode_step"] = SimpleNamespace(file="decode_step.onnx")
    with pytest.raises(IncompatibleArtifactError, match="no engine was built for decode_step"):
        check_matches_export(_manifest(tmp_path), export)


def test_engine_files_are_verified(tmp_path):
    m = _manifest(tmp_path)
    verify_engine_files(tmp_path, m)
    (tmp_path / "vision.engine").write_bytes(b"serialized enginf")  # same size, other content
    verify_engine_files(tmp_path, m, checksums=False)
    with pytest.raises(ChecksumMismatchError):
        verify_engine_files(tmp_path, m)
    (tmp_path / "vision.engine").write_bytes(b"short")
    with pytest.raises(ArtifactError, match="truncated"):
        verify_engine_files(tmp_path, m)
    (tmp_path / "vision.engine").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        verify_engine_files(tmp_path, m)
