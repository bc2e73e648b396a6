"""Synthetic "shapes" scenes and questions whose answers depend on where things are.

A scene is a few coloured shapes (circle, square, triangle, cross; small or large) placed in distinct
cells of a 3x3 layout grid on a plain grey background, rendered with PIL (no anti-aliasing, so a scene
has at most 6 colours and saves as a small palette PNG). Inside its cell a shape sits at a random offset
on a 4x4 grid of slots (one 16-px patch each at 192 px): small shapes fill one slot, large ones 2x2.
Everything is deterministic given a ``random.Random``.

Question types (answers are single words; numbers are digits):

    color_at     what color is the shape in the top left ?            -> red
    shape_at     what shape is in the middle right ?                  -> triangle
    size_at      what size is the shape in the center ?               -> small
    color_rel    what color is the shape left of the blue square ?    -> yellow
    shape_rel    what shape is below the red circle ?                 -> cross
    count_color  how many green shapes are there ?                    -> 2
    count_shape  how many circles are there ?                         -> 0
    exists       is there a purple triangle ?                         -> yes

Relations are read on the grid: "left of X" is the one object in X's row to the left of X (asked only
when there is exactly one), "above X" the one object in X's column above it, and so on. A reference
"the <color> <shape>" is always unique in its scene. :func:`answer_question` re-derives the answer of
any question from the scene description alone (the tests use it as an independent check).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

IMAGE_SIZE = 192
GRID = 3
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (240, 200, 30),
    "purple": (150, 60, 190),
}
SIZES: tuple[str, ...] = ("small", "large")
# Each cell is a 4x4 array of slots (at 192 px a slot is 16x16 px: exactly one patch of the bundled
# model). A small shape fills one slot, a large one a 2x2 block of slots, placed at a random slot offset
# inside its cell: the layout is random, but each shape is aligned with the patch grid.
SLOTS_PER_CELL = 4
SLOT_SPAN: dict[str, int] = {"small": 1, "large": 2}
# A plain background of one tone: the CLIP mean colour, which the image processor maps to ~0, so empty
# patches carry (almost) no content, only their position. Variation here would only add nuisance.
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((123, 117, 104),)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
QUESTION_TYPES: tuple[str, ...] = (
    "color_at",
    "shape_at",
    "size_at",
    "color_rel",
    "shape_rel",
    "count_color",
    "count_shape",
    "exists",
)
MIN_OBJECTS, MAX_OBJECTS = 3, 6


def position_name(row: int, col: int, grid: int = GRID) -> str:
    """Name of a cell of the 3x3 grid: ``top left``, ``top center``, ..., ``center``, ..., ``bottom right``."""
    if grid != 3:
        raise ValueError("position names are defined for a 3x3 grid")
    rows = ("top", "middle", "bottom")
    cols = ("left", "center", "right")
    if (row, col) == (1, 1):
        return "center"
    return f"{rows[row]} {cols[col]}"


POSITIONS: dict[str, tuple[int, int]] = {position_name(r, c): (r, c) for r in range(GRID) for c in range(GRID)}


@dataclass(frozen=True)
class ShapeObject:
    """One shape: what it is and where it is (grid cell and centre pixel)."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    x: int
    y: int
    radius: int


@dataclass(frozen=True)
class Scene:
    """A scene description; :func:`render_scene` draws it."""

    objects: tuple[ShapeObject, ...]
    background: tuple[int, int, int]
    image_size: int = IMAGE_SIZE
    grid: int = GRID

    def object_at(self, row: int, col: int) -> ShapeObject | None:
        for obj in self.objects:
            if (obj.row, obj.col) == (row, col):
                return obj
        return None

    def find(self, color: str, shape: str) -> list[ShapeObject]:
        return [o for o in self.objects if o.color == color and o.shape == shape]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [asdict(o) for o in self.objects],
            "background": list(self.background),
            "image_size": self.image_size,
            "grid": self.grid,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        return cls(
            objects=tuple(ShapeObject(**o) for o in data["objects"]),
            background=tuple(data["background"]),  # type: ignore[arg-type]
            image_size=int(data["image_size"]),
            grid=int(data["grid"]),
        )


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    qtype: str


def make_rng(split: str, seed: int) -> random.Random:
    """The random stream of a split (``train``, ``val``, ``test``): distinct streams for distinct names/seeds."""
    return random.Random(f"topv-shapes-vqa/{split}/{seed}")


def generate_scene(
    rng: random.Random,
    *,
    image_size: int = IMAGE_SIZE,
    grid: int = GRID,
    min_objects: int = MIN_OBJECTS,
    max_objects: int = MAX_OBJECTS,
) -> Scene:
    """A random scene: ``min_objects..max_objects`` shapes in distinct cells, at a random slot inside their cell."""
    cell = image_size // grid
    unit = cell // SLOTS_PER_CELL
    if unit < 4:
        raise ValueError(f"image_size {image_size} is too small for a {grid}x{grid} grid of {SLOTS_PER_CELL}x{SLOTS_PER_CELL} slots")
    count = rng.randint(min_objects, max_objects)
    cells = rng.sample(range(grid * grid), count)
    objects = []
    for index in sorted(cells):
        row, col = divmod(index, grid)
        size = rng.choice(SIZES)
        span = SLOT_SPAN[size]
        ox = rng.randrange(SLOTS_PER_CELL - span + 1)
        oy = rng.randrange(SLOTS_PER_CELL - span + 1)
        box = span * unit
        margin = max(1, round(box * 0.1))
        cx = col * cell + ox * unit + box // 2
        cy = row * cell + oy * unit + box // 2
        objects.append(
            ShapeObject(shape=rng.choice(SHAPES), color=rng.choice(list(COLORS)), size=size, row=row, col=col, x=cx, y=cy,
                        radius=box // 2 - margin)
        )
    background = BACKGROUNDS[rng.randrange(len(BACKGROUNDS))]
    return Scene(objects=tuple(objects), background=background, image_size=image_size, grid=grid)


OUTLINE = (20, 20, 20)
OUTLINE_WIDTH = 2


def _palette(scene: Scene) -> list[int]:
    flat = list(scene.background)
    for name in COLORS:
        flat.extend(COLORS[name])
    flat.extend(OUTLINE)
    return flat + [0] * (768 - len(flat))


def shape_polygon(shape: str, x: int, y: int, r: int) -> list[tuple[int, int]]:
    """Vertices of ``shape`` (square, triangle, cross) centred at (x, y) with half-size r."""
    if shape == "square":
        return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
    if shape == "triangle":
        return [(x, y - r), (x + r, y + round(0.8 * r)), (x - r, y + round(0.8 * r))]
    if shape == "cross":
        t = max(2, round(r * 0.4))
        return [(x - t, y - r), (x + t, y - r), (x + t, y - t), (x + r, y - t), (x + r, y + t), (x + t, y + t),
                (x + t, y + r), (x - t, y + r), (x - t, y + t), (x - r, y + t), (x - r, y - t), (x - t, y - t)]
    raise ValueError(f"no polygon for shape {shape!r}")


def render_scene(scene: Scene) -> Any:
    """The scene as a palette ("P" mode) PIL image: index 0 the background, 1.. the colours of :data:`COLORS`,
    then the outline colour.

    Shapes are filled with their colour and drawn with a dark 2-px outline (the outline is the same for
    every colour, so a shape's outline alone tells its shape and size). ``.convert("RGB")`` gives the
    exact RGB picture. No anti-aliasing: every pixel is the background, the outline or a shape's colour.
    """
    from PIL import Image, ImageDraw

    image = Image.new("P", (scene.image_size, scene.image_size), 0)
    image.putpalette(_palette(scene))
    draw = ImageDraw.Draw(image)
    color_index = {name: i + 1 for i, name in enumerate(COLORS)}
    outline = len(COLORS) + 1
    for o in scene.objects:
        fill = color_index[o.color]
        x, y, r = o.x, o.y, o.radius
        if o.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=OUTLINE_WIDTH)
        elif o.shape in ("square", "triangle", "cross"):
            draw.polygon(shape_polygon(o.shape, x, y, r), fill=fill, outline=outline, width=OUTLINE_WIDTH)
        else:  # pragma: no cover - generate_scene only makes known shapes
            raise ValueError(f"unknown shape {o.shape!r}")
    return image


# Number of classes of each patch_labels key (0 = background for the first three).
PATCH_LABEL_CLASSES: dict[str, int] = {
    "color": len(COLORS) + 1,
    "shape": len(SHAPES) + 1,
    "size": len(SIZES) + 1,
    "cell_row": GRID,
    "cell_col": GRID,
}


def patch_labels(scene: Scene, patch_size: int) -> dict[str, list[int]]:
    """What each ``patch_size`` patch of the rendered scene shows, in raster order, for dense supervision.

    Shapes are aligned with the slot grid, so at ``patch_size`` = slot size a patch is either background
    or one slot of one shape. Keys: ``color`` (0 background, 1.. the index in :data:`COLORS` + 1),
    ``shape`` (0 background, 1.. :data:`SHAPES` + 1), ``size`` (0 background, 1 small, 2 large), and the
    layout cell of the patch itself, ``cell_row`` / ``cell_col`` (0..grid-1, background included).
    :data:`PATCH_LABEL_CLASSES` gives the number of classes of each key.
    Raises ValueError when ``patch_size`` is not the scene's slot size.
    """
    cell = scene.image_size // scene.grid
    unit = cell // SLOTS_PER_CELL
    if patch_size != unit:
        raise ValueError(f"patch labels need patch_size == the slot size ({unit} px at {scene.image_size} px); got {patch_size}")
    side = scene.image_size // unit
    colors, shapes = list(COLORS), list(SHAPES)
    out = {k: [0] * (side * side) for k in ("color", "shape", "size")}
    out["cell_row"] = [(i // side) // SLOTS_PER_CELL for i in range(side * side)]
    out["cell_col"] = [(i % side) // SLOTS_PER_CELL for i in range(side * side)]
    for o in scene.objects:
        span = SLOT_SPAN[o.size]
        left, top = (o.x - span * unit // 2) // unit, (o.y - span * unit // 2) // unit
        for r in range(top, top + span):
            for c in range(left, left + span):
                i = r * side + c
                out["color"][i] = colors.index(o.color) + 1
                out["shape"][i] = shapes.index(o.shape) + 1
                out["size"][i] = SIZES.index(o.size) + 1
    return out


# ----------------------------------------------------------------------------- questions
def related(scene: Scene, ref: ShapeObject, relation: str) -> list[ShapeObject]:
    """The objects in ``relation`` to ``ref``: same row (left of / right of) or same column (above / below)."""
    if relation == "left of":
        return [o for o in scene.objects if o.row == ref.row and o.col < ref.col]
    if relation == "right of":
        return [o for o in scene.objects if o.row == ref.row and o.col > ref.col]
    if relation == "above":
        return [o for o in scene.objects if o.col == ref.col and o.row < ref.row]
    if relation == "below":
        return [o for o in scene.objects if o.col == ref.col and o.row > ref.row]
    raise ValueError(f"unknown relation {relation!r}")


def _unique_refs(scene: Scene) -> list[ShapeObject]:
    return [o for o in scene.objects if len(scene.find(o.color, o.shape)) == 1]


def make_question(scene: Scene, qtype: str, rng: random.Random) -> Question | None:
    """A question of type ``qtype`` about ``scene`` with its answer, or None when the scene has none."""
    objs = scene.objects
    if qtype in ("color_at", "shape_at", "size_at"):
        o = rng.choice(objs)
        pos = position_name(o.row, o.col, scene.grid)
        if qtype == "color_at":
            return Question(f"what color is the shape in the {pos} ?", o.color, qtype)
        if qtype == "shape_at":
            return Question(f"what shape is in the {pos} ?", o.shape, qtype)
        return Question(f"what size is the shape in the {pos} ?", o.size, qtype)
    if qtype in ("color_rel", "shape_rel"):
        options = [(ref, rel) for ref in _unique_refs(scene) for rel in RELATIONS if len(related(scene, ref, rel)) == 1]
        if not options:
            return None
        ref, rel = rng.choice(options)
        (target,) = related(scene, ref, rel)
        if qtype == "color_rel":
            return Question(f"what color is the shape {rel} the {ref.color} {ref.shape} ?", target.color, qtype)
        return Question(f"what shape is {rel} the {ref.color} {ref.shape} ?", target.shape, qtype)
    if qtype == "count_color":
        present = sorted({o.color for o in objs})
        color = rng.choice(present) if rng.random() < 0.75 else rng.choice(list(COLORS))
        return Question(f"how many {color} shapes are there ?", str(sum(o.color == color for o in objs)), qtype)
    if qtype == "count_shape":
        present = sorted({o.shape for o in objs})
        shape = rng.choice(present) if rng.random() < 0.75 else rng.choice(SHAPES)
        return Question(f"how many {PLURALS[shape]} are there ?", str(sum(o.shape == shape for o in objs)), qtype)
    if qtype == "exists":
        if rng.random() < 0.5:
            o = rng.choice(objs)
            return Question(f"is there a {o.color} {o.shape} ?", "yes", qtype)
        absent = [(c, s) for c in COLORS for s in SHAPES if not scene.find(c, s)]
        # Half of the negatives are hard: the colour or the shape is in the scene, just not together.
        hard = [(c, s) for c, s in absent if any(o.color == c or o.shape == s for o in objs)]
        color, shape = rng.choice(hard if hard and rng.random() < 0.5 else absent)
        return Question(f"is there a {color} {shape} ?", "no", qtype)
    raise ValueError(f"unknown question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def sample_example(
    rng: random.Random, qtype: str | None = None, *, weights: Sequence[float] | None = None, **scene_kwargs: Any
) -> tuple[Scene, Question]:
    """A scene and a question about it (of type ``qtype``, or drawn with ``weights`` over :data:`QUESTION_TYPES`)."""
    if qtype is None:
        qtype = rng.choices(QUESTION_TYPES, weights=weights)[0]
    while True:
        scene = generate_scene(rng, **scene_kwargs)
        q = make_question(scene, qtype, rng)
        if q is not None:
            return scene, q


def sample_scene_questions(
    rng: random.Random, count: int, *, weights: Sequence[float] | None = None, **scene_kwargs: Any
) -> tuple[Scene, list[Question]]:
    """A scene and ``count`` questions about it, their types drawn independently with ``weights``."""
    qtypes = rng.choices(QUESTION_TYPES, weights=weights, k=count)
    while True:
        scene = generate_scene(rng, **scene_kwargs)
        questions = [make_question(scene, t, rng) for t in qtypes]
        if all(q is not None for q in questions):
            return scene, questions  # type: ignore[return-value]


_COLOR = "|".join(COLORS)
_SHAPE = "|".join(SHAPES)
_POS = "|".join(POSITIONS)
_REL = "|".join(RELATIONS)
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("color_at", re.compile(rf"^what color is the shape in the (?P<pos>{_POS}) \?$")),
    ("shape_at", re.compile(rf"^what shape is in the (?P<pos>{_POS}) \?$")),
    ("size_at", re.compile(rf"^what size is the shape in the (?P<pos>{_POS}) \?$")),
    ("color_rel", re.compile(rf"^what color is the shape (?P<rel>{_REL}) the (?P<color>{_COLOR}) (?P<shape>{_SHAPE}) \?$")),
    ("shape_rel", re.compile(rf"^what shape is (?P<rel>{_REL}) the (?P<color>{_COLOR}) (?P<shape>{_SHAPE}) \?$")),
    ("count_color", re.compile(rf"^how many (?P<color>{_COLOR}) shapes are there \?$")),
    ("count_shape", re.compile(rf"^how many (?P<plural>{'|'.join(PLURALS.values())}) are there \?$")),
    ("exists", re.compile(rf"^is there a (?P<color>{_COLOR}) (?P<shape>{_SHAPE}) \?$")),
]


def question_type(question: str) -> str:
    """The type of a question written by :func:`make_question` (raises ValueError for other text)."""
    for qtype, pattern in _PATTERNS:
        if pattern.match(question):
            return qtype
    raise ValueError(f"not a shapes-vqa question: {question!r}")


def answer_question(scene: Scene, question: str) -> str:
    """The answer to ``question`` derived from the scene description alone (independent of make_question).

    Raises ValueError when the question does not parse or has no unique answer in the scene.
    """
    for qtype, pattern in _PATTERNS:
        m = pattern.match(question)
        if not m:
            continue
        g = m.groupdict()
        if qtype in ("color_at", "shape_at", "size_at"):
            o = scene.object_at(*POSITIONS[g["pos"]])
            if o is None:
                raise ValueError(f"no shape at {g['pos']}")
            return {"color_at": o.color, "shape_at": o.shape, "size_at": o.size}[qtype]
        if qtype in ("color_rel", "shape_rel"):
            refs = scene.find(g["color"], g["shape"])
            if len(refs) != 1:
                raise ValueError(f"'the {g['color']} {g['shape']}' is not unique")
            targets = related(scene, refs[0], g["rel"])
            if len(targets) != 1:
                raise ValueError(f"{len(targets)} shapes {g['rel']} the reference")
            return targets[0].color if qtype == "color_rel" else targets[0].shape
        if qtype == "count_color":
            return str(sum(o.color == g["color"] for o in scene.objects))
        if qtype == "count_shape":
            singular = {v: k for k, v in PLURALS.items()}[g["plural"]]
            return str(sum(o.shape == singular for o in scene.objects))
        return "yes" if scene.find(g["color"], g["shape"]) else "no"
    raise ValueError(f"not a shapes-vqa question: {question!r}")


def vocabulary() -> list[str]:
    """Every word of the task (questions and answers) plus the chat roles, for a word-level tokenizer."""
    words = ["USER:", "ASSISTANT:"]
    texts = [
        "what color is the shape in size how many shapes are there ? is there a yes no",
        " ".join(POSITIONS),
        " ".join(RELATIONS),
        " ".join(COLORS),
        " ".join(SHAPES),
        " ".join(PLURALS.values()),
        " ".join(SIZES),
        " ".join(str(i) for i in range(10)),
    ]
    for text in texts:
        for w in text.split():
            if w not in words:
                words.append(w)
    return words
