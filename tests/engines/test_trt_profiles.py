"""Optimization profiles from the manifest's declared axes (no TensorRT)."""

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topv.artifact.manifest import GraphInfo, StaticShapes, TensorInfo, read_manifest
from topv.engines.profiles import GraphProfile, ShapeRange, axis_ranges, derive_profiles
from topv.errors import ArtifactError, ConfigError


def test_pruned_export_profiles(pruned_export):
    m = read_manifest(pruned_export)
    n, k, p_max = m.shapes.num_visual_tokens, m.shapes.kept_visual_tokens, m.shapes.max_prompt_tokens
    profiles = derive_profiles(m)
    assert list(profiles) == list(m.graphs)
    assert not profiles["vision"].dynamic and not profiles["decode_step"].dynamic
    head = profiles["prefill_head"].inputs["input_ids"]
    assert head.min == (1, n + 1) and head.max == (1, p_max)  # a prompt holds the image and at least one more token
    assert head.opt == (1, n + (p_max - n) // 2)
    prune = profiles["prune"]
    assert prune.axes == ("sequence",)
    assert prune.inputs["hidden_states"].opt[1] == head.opt[1]
    assert prune.inputs["prune_source"].static  # (1, N, D) is fixed
    tail = profiles["prefill_tail"].inputs["hidden_states"]
    assert profiles["prefill_tail"].axes == ("kept_sequence",)
    assert tail.max[1] == p_max - n + k  # the prune graph maps sequence -> kept_sequence
    assert tail.opt[1] == head.opt[1] - n + k
    past = profiles["decode_step"].inputs["past_key.0"]
    assert past.min == past.max == m.kv.shape(0)


def test_unpruned_tail_follows_the_prompt(unpruned_export):
    profiles = derive_profiles(read_manifest(unpruned_export))
    assert "prune" not in profiles
    head, tail = profiles["prefill_head"].inputs["input_ids"], profiles["prefill_tail"].inputs["hidden_states"]
    assert (tail.min[1], tail.opt[1], tail.max[1]) == (head.min[1], head.opt[1], head.max[1])


def test_opt_override_and_its_range(pruned_export):
    m = read_manifest(pruned_export)
    n, k = m.shapes.num_visual_tokens, m.shapes.kept_visual_tokens
    ranges = axis_ranges(m, opt_prompt_tokens=n + 3)
    assert ranges["sequence"].opt == n + 3 and ranges["kept_sequence"].opt == k + 3
    with pytest.raises(ConfigError, match="outside this export's prompt range"):
        axis_ranges(m, opt_prompt_tokens=10_000)


def test_undeclared_axis_is_refused(pruned_export):
    m = read_manifest(pruned_export)
    head = m.graphs["prefill_head"]
    odd = GraphInfo(head.file, (TensorInfo("input_ids", (1, "batch_tokens"), "int64"),) + head.inputs[1:], head.outputs)
    with pytest.raises(ArtifactError, match="batch_tokens.*declared axes"):
        derive_profiles(m.replace(graphs={**m.graphs, "prefill_head": odd}))


def test_profile_json_round_trip(pruned_export):
    for profile in derive_profiles(read_manifest(pruned_export)).values():
        back = GraphProfile.from_json(profile.graph, json.loads(json.dumps(profile.to_json())))
        assert back == profile


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 600), keep_frac=st.floats(0.01, 1.0), text=st.integers(2, 200), opt=st.one_of(st.none(), st.floats(0, 1)))
def test_axis_ranges_properties(n, keep_frac, text, opt):
    k = max(1, round(n * keep_frac))
    p = n + text
    manifest = type("M", (), {"shapes": StaticShapes(p, 8, n, k)})()
    lo = n + 1
    opt_tokens = None if opt is None else max(lo, min(p, round(opt * p)))
    r = axis_ranges(manifest, opt_tokens)
    seq, kept = r["sequence"], r["kept_sequence"]
    assert 1 <= seq.min <= seq.opt <= seq.max == p
    assert 1 <= kept.min <= kept.opt <= kept.max == p - n + k
    assert kept.opt == seq.opt - n + k  # the tail is tuned for the head's prompt, pruned
    assert dataclasses.astuple(seq)[1:] == (lo, seq.opt, p)
