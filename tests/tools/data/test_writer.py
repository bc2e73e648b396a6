"""The JSON-lines split writer and the bundled val/test splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tools.data.shapes import QUESTION_TYPES, answer_question, question_type
from tools.data.writer import generate_split, main, read_split, type_counts, write_split

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = ROOT / "data" / "shapes-vqa"


def test_write_split_format(tmp_path):
    path = write_split(tmp_path, "val", 24, seed=7)
    assert path == tmp_path / "val.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 24
    for line in lines:
        item = json.loads(line)
        assert set(item) == {"image", "question", "answer"}
        assert all(isinstance(v, str) for v in item.values())
        assert not Path(item["image"]).is_absolute()
        image = Image.open(path.parent / item["image"])
        assert image.size == (192, 192) and image.mode == "P"
        assert question_type(item["question"]) in QUESTION_TYPES
    assert set(type_counts(path).values()) == {3}  # 24 questions, 8 types, balanced


def test_write_split_is_deterministic_and_matches_the_scenes(tmp_path):
    a = write_split(tmp_path / "a", "test", 16, seed=3).read_text()
    b = write_split(tmp_path / "b", "test", 16, seed=3).read_text()
    assert a == b
    assert (tmp_path / "a" / "images" / "test-00005.png").read_bytes() == (tmp_path / "b" / "images" / "test-00005.png").read_bytes()
    for (scene, q), line in zip(generate_split("test", 16, 3), a.splitlines()):
        item = json.loads(line)
        assert item["question"] == q.question and item["answer"] == q.answer == answer_question(scene, q.question)


def test_read_split_resolves_images(tmp_path):
    write_split(tmp_path, "val", 3, seed=1)
    records = read_split(tmp_path / "val.jsonl")
    assert len(records) == 3 and all(Path(r["image"]).is_file() for r in records)


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--split", "mini:8:5"]) == 0
    assert (tmp_path / "mini.jsonl").is_file()
    assert "8 questions" in capsys.readouterr().out


@pytest.mark.skipif(not (BUNDLED / "test.jsonl").is_file(), reason="bundled split not present")
def test_bundled_splits_are_the_generator_output():
    for name, count, seed in (("val", 300, 1), ("test", 600, 2)):
        records = read_split(BUNDLED / f"{name}.jsonl")
        assert len(records) == count
        assert all(Path(r["image"]).is_file() for r in records)
        # the first lines are exactly what the generator writes for that seed
        for (scene, q), r in zip(generate_split(name, 20, seed), records[:20]):
            assert (r["question"], r["answer"]) == (q.question, q.answer)
        assert min(type_counts(BUNDLED / f"{name}.jsonl").values()) >= count // len(QUESTION_TYPES) - 1
    val = {(r["question"], Path(r["image"]).read_bytes()) for r in read_split(BUNDLED / "val.jsonl")[:50]}
    test = {(r["question"], Path(r["image"]).read_bytes()) for r in read_split(BUNDLED / "test.jsonl")}
    assert not val & test
    size = sum(p.stat().st_size for p in BUNDLED.rglob("*") if p.is_file())
    assert size < 8 * 1024 * 1024
