"""tools/research/compare_configs.py: field parsing, the test-split guard, and a run on a tiny model whose
numbers agree with topv-eval's for the same config."""

import importlib.util
import json
from pathlib import Path

import pytest

from topv.evaluation.cli import main as eval_main

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("compare_configs", ROOT / "tools" / "research" / "compare_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_changes_types_fields_and_rejects_unknown_ones():
    parse = _script().parse_changes
    assert parse("importance=retention,gamma=0,iterations=5") == {"importance": "retention", "gamma": 0.0, "iterations": 5}
    with pytest.raises(SystemExit, match="unknown TopVConfig field 'gama'"):
        parse("gama=1")


def test_bad_values_are_refused_before_the_model_loads(tmp_path):
    main = _script().main
    common = ["--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "val.jsonl"), "--json", str(tmp_path / "o.json")]
    with pytest.raises(SystemExit, match="gamma='abc': expected a number"):
        main(["gamma=abc", *common])
    with pytest.raises(SystemExit, match="iterations='2.5': expected an integer"):
        main(["iterations=2.5", *common])
    with pytest.raises(SystemExit, match="gamma=-1: TopVConfig.gamma must be a number >= 0"):
        main(["gamma=-1", *common])


def test_refuses_a_test_split(tmp_path):
    with pytest.raises(SystemExit, match="refusing"):
        _script().main(["importance=retention", "--model", "x", "--data", str(tmp_path / "test.jsonl"), "--json", str(tmp_path / "o.json")])


def test_scores_agree_with_topv_eval(tiny_llava_dir, scene_image, tmp_path):
    (tmp_path / "img").mkdir()
    scene_image.save(tmp_path / "img" / "a.png")
    lines = [{"image": "img/a.png", "question": q, "answer": a} for q, a in (("w1 w2", "w5"), ("w3", "w7"), ("w9", "w2"))]
    data = tmp_path / "val.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "cmp.json"
    assert _script().main(["importance=semi_relaxed,gamma=0.5", "--model", str(tiny_llava_dir), "--data", str(data),
                           "--keep", "6,3", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["config"]["importance"] == "semi_relaxed" and row["config"]["gamma"] == 0.5
    assert set(row["accuracy"]) == {"6", "3"}

    ref = tmp_path / "eval.json"
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(row["config"]))
    eval_main([str(tiny_llava_dir), "--data", str(data), "--methods", "topv,none", "--keep", "6,3", "--threads", "1",
               "--config", str(config), "--json", str(ref)])
    rows = {(r["method"], r["keep"]): r["accuracy"] for r in json.loads(ref.read_text())["results"]}
    assert result["no_pruning_accuracy"] == rows[("none", None)]
    assert row["accuracy"] == {str(k): rows[("topv", k)] for k in (6, 3)}
