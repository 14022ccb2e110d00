"""The geometry of a diagram: sizes in inches, and the records a layout is made of.

Coordinates are in inches, `x` to the right and `y` downwards from the top-left corner, so
a renderer at 1:1 scale gets text of the size the layout measured. Every record is frozen
plain data: the layout tests check them as data, and every renderer only draws them.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Literal

from .describe import text_width
from .graph import Graph, NodeKind

__all__ = [
    "Box",
    "Direction",
    "Edge",
    "EdgeKind",
    "Frame",
    "Label",
    "LabelKind",
    "Layout",
    "Mark",
    "Point",
    "TextFit",
    "frame_nesting",
    "glyph_radius",
    "label_rise",
    "mark_height",
    "mark_lines",
    "mark_width",
    "outline_bottom",
    "outline_right",
    "outline_top",
    "slot_offsets",
    "tap_room",
]

Point = tuple[float, float]

EdgeKind = Literal["flow", "skip", "tap"]
"""A flow edge joins consecutive nodes; a skip runs from a save (or a named input's entry)
through its lane to reads; a tap runs from an output's glyph on the flow to its name."""

Direction = Literal["down", "right"]
"""Which way the flow runs: down columns that wrap to the right (the default), or along rows
left to right that wrap downwards."""

LabelKind = Literal["frame", "skip", "shape"]
"""What a label names: a frame, a skip (name, op, shape), or the tensor shape on an edge."""

BOX_FONT = 8.0  # points: layer text
SMALL_FONT = 7.0  # points: parameter counts, skip labels, frame labels, transforms
SHAPE_FONT = 6.5  # points: tensor shapes on edges
LINE_H = 0.14  # inches per text line in a box
BOX_PAD_X = 0.12
BOX_PAD_Y = 0.09
MIN_BOX_W = 1.7
MAX_BOX_W = 3.6
GLYPH = 0.3  # save dots and merge circles sit in a GLYPH × GLYPH box
DOT_R = 0.06
MERGE_R = 0.14
TAP_R = 0.07  # an output's tap: a diamond this far from its centre to each corner
TAP_ARROW = 0.16  # from a tap's corner to the box naming its output
SLOT_STEP = 0.06  # between the places where the values of one read join its merge
SLOT_SPREAD = 0.1  # the furthest from the centre line a value joins a merge
LABEL_INSET = 0.07  # from a glyph's edge to its skip label
LABEL_CLEARANCE = 0.04  # between a skip label's end and lane 0
MARK_CLEARANCE = 0.05  # between a transform mark and the glyph or lane beside it
MARK_H = 0.18
TRANSFORM_ROW = 0.56  # height of a save/merge row whose skip has a transform
GAP = 0.34  # vertical room for an edge (and its shape label) between two rows
FRAME_HEADER = 0.24
FRAME_FOOTER = 0.14
FRAME_PAD = 0.14  # horizontal room between nested frame borders
LANE_MARGIN = 0.24  # from the right side of the boxes to the first lane
LANE_GAP = 0.16
TOP = 0.36  # room above the first row, for edges that wrap to the next column
BOTTOM = 0.3
COLUMN_GUTTER = 0.5
RIGHT_PAD = 0.2
WRAP_Y = 0.16  # the height of the edges that wrap to the next column
MIN_WRAP_HEIGHT = 14.0  # inches: a diagram shorter than this stays in one column...
MAX_ASPECT = 2.5  # ...unless it is taller than this many times its width
CROSS_STEP = 0.08  # between the top runs of skips crossing into a column
MARK_LINE_H = 0.13  # inches per text line in a transform mark
MARK_PAD_Y = 0.03
MAX_MARK_LINES = 3  # a transform of more layers is one line: its class, layer and param counts


@dataclass(frozen=True)
class Box:
    """A node's rectangle (top-left `x`, `y`), its text lines and colour family."""

    id: str
    kind: NodeKind
    x: float
    y: float
    w: float
    h: float
    lines: tuple[str, ...]
    family: str
    column: int

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(frozen=True)
class Frame:
    """A block's frame; `label` sits in its header, inside its top-left corner."""

    id: str
    label: str
    x: float
    y: float
    w: float
    h: float
    depth: int
    parent: str | None
    column: int


@dataclass(frozen=True)
class Label:
    """Text placed at (`x`, `y`); `ha`/`va` as in matplotlib; `kind` styles it."""

    x: float
    y: float
    text: str
    kind: LabelKind
    size: float
    ha: Literal["left", "center", "right"] = "left"
    va: Literal["top", "center", "bottom"] = "center"

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """An estimated `(x0, y0, x1, y1)` of the text."""
        w = text_width(self.text, self.size)
        h = self.size / 72 * 1.25
        x0 = {"left": self.x, "center": self.x - w / 2, "right": self.x - w}[self.ha]
        y0 = {"top": self.y, "center": self.y - h / 2, "bottom": self.y - h}[self.va]
        return (x0, y0, x0 + w, y0 + h)


@dataclass(frozen=True)
class Mark:
    """A transform drawn on a skip edge: a small box centred on the edge's line, a line of
    text per layer of the transform (`lines`), or one line naming a long one."""

    x: float
    y: float
    w: float
    h: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """All the lines, one per line."""
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Edge:
    """A flow edge (`kind="flow"`) or a skip (`kind="skip"`).

    `paths` are polylines of axis-aligned segments, each ending at a target with an arrow;
    a skip's first path runs from its save through its lane to its last reader, the others
    branch off the lane to earlier readers. `lane` is the skip's lane (`None` for flow).
    """

    id: str
    kind: EdgeKind
    source: str
    targets: tuple[str, ...]
    paths: tuple[tuple[Point, ...], ...]
    lane: int | None
    labels: tuple[Label, ...]
    marks: tuple[Mark, ...]

    def segments(self) -> list[tuple[Point, Point]]:
        return [(a, b) for path in self.paths for a, b in itertools.pairwise(path)]


@dataclass(frozen=True)
class Layout:
    """Everything a renderer draws, in inches; `width` × `height` is the natural size.

    `labels` are the frames' header labels, one per frame in the order of `frames`. With
    `direction="right"` the flow runs along rows and `columns` counts the rows (a box's
    `column` is its row).
    """

    width: float
    height: float
    boxes: tuple[Box, ...]
    frames: tuple[Frame, ...]
    edges: tuple[Edge, ...]
    labels: tuple[Label, ...]
    columns: int
    graph: Graph
    direction: Direction = "down"

    def box(self, box_id: str) -> Box:
        """The box of the node whose occurrence path is `box_id`."""
        box = self._boxes_by_id.get(box_id)
        if box is None:
            raise KeyError(f"no box {box_id!r} in this layout")
        return box

    @functools.cached_property
    def _boxes_by_id(self) -> dict[str, Box]:
        return {box.id: box for box in self.boxes}


FitKind = Literal["box", "skip", "mark", "frame", "tap"]


@dataclass(frozen=True)
class TextFit:
    """How much text fits where, once the one box width of a diagram is known."""

    box_w: float

    def fit(self, text: str, kind: FitKind, name: int | None = None) -> str:
        """`text` cut short with an ellipsis where even the widest box leaves no room.

        `kind` is where the text goes: in a box, on a skip's line, in a transform mark, in
        a frame's header, or in the box at the end of an output's tap. With `name`, only
        `text[:name]` (a name) is cut and the rest (an op, a shape) is kept whole.
        """
        half = self.box_w / 2 + LANE_MARGIN - MERGE_R
        room = {
            "box": (self.box_w - 2 * BOX_PAD_X, BOX_FONT),
            "skip": (half - LABEL_INSET - LABEL_CLEARANCE, SMALL_FONT),
            "mark": (half - 2 * MARK_CLEARANCE - 0.1, SMALL_FONT),
            "frame": (self.box_w / 2 - 0.1, SMALL_FONT),
            "tap": (tap_room(self.box_w) - 0.1, SMALL_FONT),
        }
        width, size = room[kind]
        if text_width(text, size) <= width + 1e-9:
            return text
        keep = max(1, int(width / text_width("x", size)) - 1)
        if name is None:
            return text[:keep] + "…"
        tail = text[name:]
        return text[: max(1, min(name, keep - len(tail)))] + "…" + tail


def frame_nesting(graph: Graph, frame_ids: list[str]) -> dict[str, int]:
    """How many levels of frames each of `frame_ids` holds inside it (0 for the innermost)."""
    nesting = dict.fromkeys(frame_ids, 0)
    for fid in frame_ids:
        parent, height = graph.frame(fid).parent, 1
        while parent is not None and parent in nesting:
            nesting[parent] = max(nesting[parent], height)
            parent, height = graph.frame(parent).parent, height + 1
    return nesting


def mark_lines(text: TextFit, layers: tuple[str, ...]) -> tuple[str, ...]:
    """A transform's lines as its mark shows them: `Conv2d 8→16, k1 · 144 params` on one
    line where it fits, else the layer on one line and its parameter count on the next."""
    lines: list[str] = []
    for layer in layers:
        if text.fit(layer, "mark") == layer:
            lines.append(layer)
            continue
        head, sep, params = layer.rpartition(" · ")
        if not sep:
            lines.append(text.fit(layer, "mark"))
            continue
        lines += [text.fit(head, "mark"), text.fit(params, "mark")]
    return tuple(lines)


def mark_width(lines: tuple[str, ...] | str) -> float:
    """The width of a transform mark holding `lines`."""
    if isinstance(lines, str):
        lines = (lines,)
    return max(text_width(line, SMALL_FONT) for line in lines) + 0.1


def mark_height(lines: tuple[str, ...]) -> float:
    """The height of a transform mark holding `lines`."""
    return max(MARK_H, len(lines) * MARK_LINE_H + 2 * MARK_PAD_Y)


def tap_room(box_w: float) -> float:
    """How wide the box naming an output may be: from its tap's arrow to lane 0."""
    return box_w / 2 + LANE_MARGIN - LABEL_CLEARANCE - TAP_R - TAP_ARROW


def glyph_radius(box: Box) -> float | None:
    """The radius of a save's dot, a read's circle or a tap's diamond; `None` for a box."""
    return {"save": DOT_R, "merge": MERGE_R, "tap": TAP_R}.get(box.kind)


def outline_right(box: Box) -> float:
    """Where an edge leaves `box`'s drawn outline to the right."""
    radius = glyph_radius(box)
    return box.x + box.w if radius is None else box.cx + radius


def slot_offsets(slots: int) -> tuple[float, ...]:
    """Where each of a read's `slots` values joins its merge, from the centre line across
    the flow (the first furthest up, or left): one value on the line, several spread
    `SLOT_STEP` apart, never further than `SLOT_SPREAD` from it."""
    if slots <= 1:
        return (0.0,)
    step = min(SLOT_STEP, 2 * SLOT_SPREAD / (slots - 1))
    return tuple((index - (slots - 1) / 2) * step for index in range(slots))


def label_rise(slots: int) -> float:
    """How far above a read's centre line its label sits: above the first value's line."""
    return 0.075 - slot_offsets(slots)[0]


def outline_top(box: Box) -> float:
    """Where an edge arriving from above meets `box`'s drawn outline."""
    radius = glyph_radius(box)
    return box.y if radius is None else box.cy - radius


def outline_bottom(box: Box) -> float:
    """Where an edge leaves `box`'s drawn outline downwards."""
    radius = glyph_radius(box)
    return box.y + box.h if radius is None else box.cy + radius
