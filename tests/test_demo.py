"""The README's main job (`bash scripts/demo.sh` runs `python -m topv.demo`) works end to end."""

from topv.demo import BUNDLED_MODEL, main


def test_demo_exports_answers_and_saves_the_kept_map(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert "answer" in lines and "question" in lines and "image" in lines
    assert "timings (ms)" in out and "prune" in lines["timings (ms)"]
    assert (tmp_path / "kept-map.png").stat().st_size > 1000
    assert (tmp_path / "export" / "manifest.json").is_file()
    if (BUNDLED_MODEL / "config.json").is_file():
        assert "bundled" in lines["model"]
        assert lines["answer"].strip() != ""
