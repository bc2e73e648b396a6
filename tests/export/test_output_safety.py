"""Nothing a user owns is lost: --force replaces only a topv export, never the model or the working directory;
concurrent and interrupted exports leave either the old or the new export in place, and leftovers are cleaned."""

import json
import os
import shutil

import pytest

from topv.errors import ArtifactError, OutputExistsError
from topv.export import output
from topv.export.cli import main as export_main
from topv.export.exporter import ExportOptions, export_model
from topv.runtime.pipeline import Pipeline
from topv.testing.llava import LlavaShape

SHAPE = LlavaShape(initializer_range=0.2)  # 4x4 grid, 4 layers
FAST = dict(keep=4, validate_tokens=2)


@pytest.fixture(scope="module")
def model_dir(exports):
    return exports.model_dir("safety-4x4", SHAPE)


@pytest.fixture(scope="module")
def an_export(exports):
    return exports.export("safety-4x4", SHAPE, **FAST)


def _tree(folder):
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def test_force_never_replaces_the_model_folder_or_a_folder_holding_it(model_dir, tmp_path):
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    before = _tree(m)
    for out in (m, tmp_path):
        with pytest.raises(OutputExistsError, match="never replaces its input"):
            export_model(m, out, ExportOptions(force=True, **FAST))
        assert export_main([str(m), str(out), "--keep", "4", "--force", "-q"]) == 2
    assert _tree(m) == before


def test_the_working_directory_is_never_an_output(an_export, model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(an_export, out)
    monkeypatch.chdir(out)
    assert export_main([str(model_dir), ".", "--keep", "4", "--force", "-q"]) == 2
    assert "working directory" in capsys.readouterr().err
    assert (out / "manifest.json").is_file()


def test_a_second_export_finishing_later_does_not_replace_the_first(an_export, model_dir, tmp_path, monkeypatch):
    import topv.export.checks as checks

    out = tmp_path / "out"
    real = checks.validate_export

    def another_export_finishes_first(folder, job, recorder):
        shutil.copytree(an_export, out)  # the other export moved into place while this one was validating
        return real(folder, job, recorder)

    monkeypatch.setattr(checks, "validate_export", another_export_finishes_first)
    with pytest.raises(OutputExistsError, match="already exists"):
        export_model(model_dir, out, ExportOptions(keep=5, validate_tokens=2))
    assert json.loads((out / "manifest.json").read_text())["pruning"]["keep"] == 4  # the first export is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupted_replacement_is_restored(an_export, model_dir, tmp_path):
    out = tmp_path / "out"
    old = tmp_path / ".out.old-deadbeef"
    shutil.copytree(an_export, old)  # killed between the two renames of a --force swap: OUT_DIR is missing
    with pytest.raises(OutputExistsError):  # the old export comes back first, and is not replaced without --force
        export_model(model_dir, out, ExportOptions(keep=5, validate_tokens=2))
    assert json.loads((out / "manifest.json").read_text())["pruning"]["keep"] == 4
    export_model(model_dir, out, ExportOptions(keep=5, validate_tokens=2, force=True))
    assert json.loads((out / "manifest.json").read_text())["pruning"]["keep"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_of_killed_exports_are_removed_but_running_ones_are_not(an_export, model_dir, tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / ".out.partial-0000dead"
    shutil.copytree(an_export, dead)
    live = tmp_path / ".out.partial-0000live"
    live.mkdir()
    with output._flock(live):  # an export still running holds its partial folder
        export_model(model_dir, out, ExportOptions(**FAST))
    assert not dead.exists() and live.exists()


def test_an_unvalidated_folder_is_refused(an_export, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(an_export, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["validation"] = None  # what a killed export leaves in its partial folder
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="never validated"):
        Pipeline.load(out)


def test_exports_leave_no_lock_or_temporary_files(model_dir, tmp_path):
    export_model(model_dir, tmp_path / "a", ExportOptions(**FAST))
    assert sorted(os.listdir(tmp_path)) == ["a"]
