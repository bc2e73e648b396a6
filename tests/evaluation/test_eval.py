"""topv-eval: data loading errors, accuracy bookkeeping, overlaps, and a small end-to-end run."""

import importlib.util
import json

import pytest

from topv.errors import InputError
from topv.evaluation.cli import main as eval_main
from topv.evaluation.evaluate import Cell, configurations, load_jsonl, report


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, scene_image):
    root = tmp_path_factory.mktemp("data")
    (root / "img").mkdir()
    scene_image.save(root / "img" / "a.png")
    lines = [
        {"image": "img/a.png", "question": "w1 w2", "answer": "w5", "type": "t1"},
        {"image": "img/a.png", "question": "w3", "answer": "The W7!", "type": "t2"},
        {"image": "img/a.png", "question": "w9 w9", "answer": "three", "type": "t1"},
    ]
    path = root / "val.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_load_jsonl_resolves_paths_and_reports_bad_lines(dataset, tmp_path):
    ex = load_jsonl(dataset)
    assert len(ex) == 3 and ex[0].image.endswith("img/a.png") and ex[1].qtype == "t2"
    assert len(load_jsonl(dataset, limit=2)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "question": "q", "answer": "a"}\nnot json\n')
    with pytest.raises(InputError, match="bad.jsonl:2 is not valid JSON"):
        load_jsonl(bad)
    bad.write_text('{"image": "a.png", "question": "q"}\n')
    with pytest.raises(InputError, match=r"lacks string field\(s\) \['answer'\]"):
        load_jsonl(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_configurations_and_unknown_methods():
    assert configurations(["none", "topv", "fastv"], [8, 4]) == [("none", None), ("topv", 8), ("fastv", 8), ("topv", 4), ("fastv", 4)]
    with pytest.raises(InputError, match="Unknown method"):
        configurations(["sparsevlm"], [4])


def test_overlap_and_relative_accuracy():
    a = Cell("topv", 2, correct=3, total=4, kept=[[0, 1], [2, 3]])
    b = Cell("random", 2, correct=1, total=4, kept=[[0, 2], [2, 3]])
    none = Cell("none", None, correct=2, total=4)
    rep = report([none, a, b], num_visual_tokens=8)
    # Jaccard: {0,1} vs {0,2} = 1/3; identical = 1 -> mean 2/3.
    assert rep["kept_overlap"]["2"]["random|topv"] == pytest.approx(2 / 3)
    rows = {r["method"]: r for r in rep["results"]}
    assert rows["topv"]["accuracy"] == 0.75 and rows["topv"]["relative_to_none"] == pytest.approx(1.5)
    assert rows["topv"]["keep_fraction"] == 0.25


def test_end_to_end_on_a_tiny_model(tiny_llava_dir, dataset, tmp_path, capsys):
    out = tmp_path / "eval.json"
    preds = tmp_path / "preds.jsonl"
    rc = eval_main([str(tiny_llava_dir), "--data", str(dataset), "--keep", "8,4", "--json", str(out),
                    "--plot", str(tmp_path / "acc.png"), "--predictions", str(preds), "--threads", "1"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["meta"]["n"] == 3 and result["meta"]["num_visual_tokens"] == 16
    rows = result["results"]
    assert {(r["method"], r["keep"]) for r in rows} == {("none", None)} | {(m, k) for m in ("topv", "fastv", "random", "uniform") for k in (8, 4)}
    assert all(r["n"] == 3 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert set(result["kept_overlap"]["8"]) == {"fastv|random", "fastv|topv", "fastv|uniform", "random|topv", "random|uniform", "topv|uniform"}
    records = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(records) == 3 * 9
    # Accuracy is recomputed from the predictions: the bookkeeping is consistent.
    topv8 = [r for r in records if r["method"] == "topv" and r["keep"] == 8]
    assert sum(r["correct"] for r in topv8) / 3 == next(r["accuracy"] for r in rows if r["method"] == "topv" and r["keep"] == 8)
    assert all(len(r["kept_indices"]) == r["keep"] for r in records if r["keep"])
    assert (tmp_path / "acc.png").stat().st_size > 5000
    assert "keep 8 (0.50)" in capsys.readouterr().out


def test_ort_backend_agrees_with_torch_on_topv(tiny_llava_dir, dataset, tmp_path):
    from topv.evaluation.run import EvalOptions, run_eval

    common = dict(methods=["topv", "none"], keeps=[6], work_dir=tmp_path / "work", threads=1)
    a = run_eval(tiny_llava_dir, dataset, EvalOptions(backend="torch", predictions=str(tmp_path / "a.jsonl"), **common))
    b = run_eval(tiny_llava_dir, dataset, EvalOptions(backend="ort-cpu", predictions=str(tmp_path / "b.jsonl"), **common))
    key = lambda r: (r["method"], r["keep"], r["index"])  # noqa: E731
    pa = sorted((json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()), key=key)
    pb = sorted((json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()), key=key)
    assert [(r["prediction"], r["kept_indices"]) for r in pa] == [(r["prediction"], r["kept_indices"]) for r in pb]
    assert [r["accuracy"] for r in a["results"]] == [r["accuracy"] for r in b["results"]]
    with pytest.raises(InputError, match="implement topv and none only"):
        run_eval(tiny_llava_dir, dataset, EvalOptions(backend="ort-cpu", methods=["fastv"], keeps=[6], work_dir=tmp_path / "w2"))


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="the openvino backend needs OpenVINO: pip install 'topv[openvino]'")
def test_agreement_report_against_ort_cpu(tiny_llava_dir, dataset, tmp_path, capsys):
    """--agreement: every question also on ort-cpu float32; openvino float32 agrees exactly (tokens and kept tokens)."""
    out = tmp_path / "agree.json"
    rc = eval_main([str(tiny_llava_dir), "--data", str(dataset), "--methods", "topv", "--keep", "6", "--backend", "openvino",
                    "--agreement", "--threads", "1", "--work-dir", str(tmp_path / "work"), "--json", str(out)])
    assert rc == 0
    entry = json.loads(out.read_text())["agreement"]["topv keep=6"]
    assert entry["questions"] == 3 and entry["kept_indices_identical"] == 3 and entry["greedy_questions_identical"] == 3
    assert entry["logits_cosine_min"] > 0.9999 and entry["teacher_forced_steps"] >= 3
    assert "against ort-cpu float32 (openvino, precision f32" in capsys.readouterr().out
    assert eval_main([str(tiny_llava_dir), "--data", str(dataset), "--agreement"]) == 2  # torch backend: nothing to compare
