"""Scene generation, rendering and questions of the synthetic shapes-VQA task."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from tools.data.shapes import (
    COLORS,
    GRID,
    IMAGE_SIZE,
    OUTLINE,
    PATCH_LABEL_CLASSES,
    POSITIONS,
    QUESTION_TYPES,
    Scene,
    answer_question,
    generate_scene,
    make_question,
    make_rng,
    patch_labels,
    question_type,
    render_scene,
    sample_example,
    vocabulary,
)


def test_scene_is_deterministic_for_a_seed():
    a = [generate_scene(make_rng("train", 5)) for _ in range(3)]
    b = [generate_scene(make_rng("train", 5)) for _ in range(3)]
    assert a == b
    assert np.array_equal(np.asarray(render_scene(a[0])), np.asarray(render_scene(b[0])))
    c = generate_scene(make_rng("train", 6))
    d = generate_scene(make_rng("val", 5))
    assert c != a[0] and d != a[0]


def test_examples_are_deterministic_for_a_seed():
    def run(seed):
        rng = make_rng("train", seed)
        return [sample_example(rng) for _ in range(20)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_scene_layout_is_valid():
    rng = random.Random(0)
    cell = IMAGE_SIZE / GRID
    for _ in range(200):
        scene = generate_scene(rng)
        cells = [(o.row, o.col) for o in scene.objects]
        assert 3 <= len(cells) <= 6 and len(set(cells)) == len(cells)
        for o in scene.objects:
            # every shape lies inside its own cell
            assert o.col * cell <= o.x - o.radius and o.x + o.radius <= (o.col + 1) * cell
            assert o.row * cell <= o.y - o.radius and o.y + o.radius <= (o.row + 1) * cell


def test_render_matches_the_scene():
    rng = random.Random(1)
    for _ in range(30):
        scene = generate_scene(rng)
        image = render_scene(scene)
        assert image.mode == "P" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
        rgb = np.asarray(image.convert("RGB"))
        for o in scene.objects:
            assert tuple(rgb[o.y, o.x]) == COLORS[o.color]
        colours = {tuple(c) for c in rgb.reshape(-1, 3)}
        assert colours == {scene.background, OUTLINE} | {COLORS[o.color] for o in scene.objects}
        # cells without a shape are plain background
        cell = IMAGE_SIZE // GRID
        occupied = {(o.row, o.col) for o in scene.objects}
        for r in range(GRID):
            for c in range(GRID):
                if (r, c) not in occupied:
                    block = rgb[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
                    assert (block == np.array(scene.background)).all()


def test_patch_labels_match_the_rendered_pixels():
    """Each 16-px patch labelled with an object shows that object's colour (and nothing else but outline);
    every other patch is plain background; large shapes cover 4 patches, small ones 1."""
    rng = random.Random(2)
    colours = list(COLORS)
    for _ in range(30):
        scene = generate_scene(rng)
        labels = patch_labels(scene, 16)
        pixels = np.asarray(render_scene(scene))  # palette indices: 0 background, 1.. colours, then outline
        side = IMAGE_SIZE // 16
        assert all(len(v) == side * side for v in labels.values())
        assert labels.keys() == PATCH_LABEL_CLASSES.keys()
        assert all(0 <= x < PATCH_LABEL_CLASSES[k] for k, v in labels.items() for x in v)
        for i in range(side * side):
            r, c = divmod(i, side)
            patch = pixels[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
            assert labels["cell_row"][i] == r // 4 and labels["cell_col"][i] == c // 4
            if labels["color"][i] == 0:
                assert (patch == 0).all() and labels["shape"][i] == 0 and labels["size"][i] == 0
            else:
                assert set(np.unique(patch)) <= {0, labels["color"][i], len(COLORS) + 1}
                assert (patch == labels["color"][i]).any()
        covered = Counter((labels["color"][i], labels["shape"][i], labels["size"][i]) for i in range(side * side) if labels["color"][i])
        for o in scene.objects:
            key = (colours.index(o.color) + 1, ["circle", "square", "triangle", "cross"].index(o.shape) + 1, 1 if o.size == "small" else 2)
            assert covered[key] >= (1 if o.size == "small" else 4)
        assert sum(covered.values()) == sum(1 if o.size == "small" else 4 for o in scene.objects)


def test_patch_labels_need_the_slot_size():
    scene = generate_scene(random.Random(0))
    with pytest.raises(ValueError, match="slot size"):
        patch_labels(scene, 14)


def test_scene_roundtrips_through_a_dict():
    scene = generate_scene(random.Random(2))
    assert Scene.from_dict(scene.to_dict()) == scene


@pytest.mark.parametrize("qtype", QUESTION_TYPES)
def test_answers_agree_with_an_independent_recomputation(qtype):
    rng = random.Random(qtype)
    answers = Counter()
    for _ in range(150):
        scene, q = sample_example(rng, qtype)
        assert q.qtype == qtype
        assert question_type(q.question) == qtype
        assert answer_question(scene, q.question) == q.answer
        answers[q.answer] += 1
    assert len(answers) >= 2  # not degenerate


def test_all_question_types_appear_in_a_random_stream():
    rng = make_rng("train", 0)
    types = Counter(sample_example(rng)[1].qtype for _ in range(400))
    assert set(types) == set(QUESTION_TYPES)


def test_exists_is_balanced_and_counts_cover_several_values():
    rng = random.Random(3)
    exists = Counter(sample_example(rng, "exists")[1].answer for _ in range(300))
    assert 0.35 < exists["yes"] / 300 < 0.65
    counts = Counter(sample_example(rng, "count_color")[1].answer for _ in range(300))
    assert {"0", "1", "2"} <= set(counts)


def test_relations_follow_the_grid():
    from tools.data.shapes import ShapeObject

    def obj(shape, color, row, col):
        return ShapeObject(shape, color, "large", row, col, 32 + 64 * col, 32 + 64 * row, 21)

    scene = Scene(
        objects=(obj("circle", "red", 1, 1), obj("square", "blue", 1, 0), obj("cross", "green", 0, 1), obj("triangle", "yellow", 2, 2)),
        background=(245, 245, 245),
    )
    assert answer_question(scene, "what color is the shape left of the red circle ?") == "blue"
    assert answer_question(scene, "what shape is above the red circle ?") == "cross"
    assert answer_question(scene, "what color is the shape in the bottom right ?") == "yellow"
    assert answer_question(scene, "what shape is in the center ?") == "circle"
    assert answer_question(scene, "how many red shapes are there ?") == "1"
    assert answer_question(scene, "how many crosses are there ?") == "1"
    assert answer_question(scene, "is there a blue square ?") == "yes"
    assert answer_question(scene, "is there a blue circle ?") == "no"
    with pytest.raises(ValueError):
        answer_question(scene, "what shape is right of the red circle ?")  # nothing there
    with pytest.raises(ValueError):
        answer_question(scene, "what shape is in the top left ?")  # empty cell


def test_position_names():
    assert POSITIONS["top left"] == (0, 0)
    assert POSITIONS["center"] == (1, 1)
    assert POSITIONS["middle right"] == (1, 2)
    assert POSITIONS["bottom center"] == (2, 1)
    assert len(POSITIONS) == 9


def test_questions_are_whitespace_tokenizable_with_the_vocabulary():
    vocab = set(vocabulary())
    rng = random.Random(4)
    for _ in range(300):
        _, q = sample_example(rng)
        assert q.question.endswith(" ?")
        assert set(q.question.split()) <= vocab
        assert q.answer in vocab and " " not in q.answer


def test_make_question_returns_none_when_no_relation_exists():
    from tools.data.shapes import ShapeObject

    scene = Scene(
        objects=(
            ShapeObject("circle", "red", "small", 0, 0, 32, 32, 11),
            ShapeObject("square", "blue", "small", 1, 1, 96, 96, 11),
            ShapeObject("cross", "green", "small", 2, 2, 160, 160, 11),
        ),
        background=(245, 245, 245),
    )
    assert make_question(scene, "color_rel", random.Random(0)) is None
    with pytest.raises(ValueError):
        make_question(scene, "nonsense", random.Random(0))
