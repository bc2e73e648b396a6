"""The README's main job (`bash scripts/demo.sh` runs `python -m tools.demo`) works end to end on the bundled model."""

from tools.demo import main


def test_demo_exports_answers_and_saves_the_kept_map(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert "bundled" in lines["model"]
    assert lines["answer"].strip() == lines["expected"].strip()  # the bundled model answers test question 0 correctly
    assert "timings (ms)" in out and "prune" in lines["timings (ms)"]
    assert (tmp_path / "kept-map.png").stat().st_size > 1000
    assert (tmp_path / "export" / "manifest.json").is_file()
