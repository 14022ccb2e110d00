"""Where skip edges run: a lane per skip right of the boxes, and the path from save to reads.

Within a column, skips and frame borders share one set of levels counted outwards from the
boxes; a skip live where the diagram wraps runs down its lane to the foot of the column,
across the gutter, and on down a lane of the next column. Deeper scopes come first, so a
skip inside a frame runs inside its border and a skip passing or entering a frame runs
outside it; each takes the level just outside every earlier one it overlaps vertically, so
skips with overlapping spans never share a lane (found in `O(log n)` by `intervals.py`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .geometry import (
    LABEL_INSET,
    LANE_MARGIN,
    MARK_CLEARANCE,
    MERGE_R,
    SMALL_FONT,
    Box,
    Edge,
    Label,
    Mark,
    Point,
    TextFit,
    label_rise,
    mark_height,
    mark_lines,
    mark_width,
    outline_right,
    slot_offsets,
)
from .graph import Graph, GraphSkip, SkipRead
from .intervals import LevelIndex

__all__ = ["SkipRoute", "SkipRouter", "arrival", "label_raise", "lane_levels", "name_length"]


def lane_levels(
    graph: Graph,
    skip_spans: Sequence[tuple[GraphSkip, tuple[float, float]]],
    frame_spans: Mapping[str, tuple[float, float]],
) -> dict[str, int]:
    """The level of every skip (by skip id) and every frame's right border (by frame id) in
    one column.

    Args:
        graph: the graph the skips and frames belong to.
        skip_spans: the top and bottom of each skip's lane in this column (a skip crossing
            in from the column before starts at the top; one crossing out ends at the foot).
        frame_spans: the top and bottom of each of the column's frames.
    """
    objects: list[tuple[tuple[float, ...], str, tuple[float, float]]] = []
    for skip, span in skip_spans:
        # Spans equal here (two skips crossing the whole column): the one that reaches
        # further on, or began earlier, is the outer one.
        end = max((graph.order(r.node) for r in skip.reads), default=0)
        reach = (float(end), -float(graph.order(skip.save)))
        key = (-2.0 * _scope_depth(graph, skip), span[1] - span[0], span[0], *reach)
        objects.append((key, skip.id, span))
    for frame_id, span in frame_spans.items():
        key = (-2.0 * graph.frame(frame_id).depth + 1, span[1] - span[0], span[0], 0.0, 0.0)
        objects.append((key, frame_id, span))
    objects.sort(key=lambda item: item[0])
    placed = LevelIndex(end for _, _, span in objects for end in span)
    level: dict[str, int] = {}
    for _, obj_id, span in objects:
        level[obj_id] = placed.highest(span) + 1
        placed.place(span, level[obj_id])
    return level


def _scope_depth(graph: Graph, skip: GraphSkip) -> int:
    """How many frames hold the save and all the readers of `skip`."""
    paths = [graph.node(skip.save).frames, *(graph.node(r.node).frames for r in skip.reads)]
    depth = 0
    while all(len(p) > depth for p in paths) and len({p[depth] for p in paths}) == 1:
        depth += 1
    return depth


@dataclass(frozen=True)
class SkipRoute:
    """Where a skip runs: its lane's `x` in each column it passes (by column index), and for
    each column it leaves, the `(y at the foot, x in the gutter, y at the top of the next
    column)` of its way across; `level` is its lane level in its save's column."""

    lanes: Mapping[int, float]
    turns: Mapping[int, tuple[float, float, float]]
    level: int


@dataclass(frozen=True)
class SkipRouter:
    """Draws a skip as an edge: out of its save, down its lane, into each read."""

    text: TextFit

    def edge(self, skip: GraphSkip, boxes: Mapping[str, Box], route: SkipRoute) -> Edge:
        """The edge of `skip` along `route`: out of its save's dot (or its entry's right
        side), down its lane, into each read (at the read's slot for this value)."""
        save = boxes[skip.save]
        lanes = route.lanes
        labels: list[Label] = []
        if save.kind == "save":  # an entry names itself in its box
            labels.append(self.line_label(save, skip.label, skip.transform_layers))
        marks = self.marks(save, skip.transform_layers, lanes[save.column])
        if not skip.reads:
            edge = Edge(skip.id, "skip", skip.save, (), (), route.level, (), ())
            return dataclasses.replace(edge, labels=tuple(labels), marks=tuple(marks))
        start = (outline_right(save), save.cy)
        readers = [boxes[r.node] for r in skip.reads]
        arrivals = [arrival(box, read) for read, box in zip(skip.reads, readers, strict=True)]
        last = max(range(len(readers)), key=lambda i: (readers[i].column, arrivals[i][1]))
        end = readers[last]
        main: list[Point] = [start, (lanes[save.column], save.cy)]
        for column in range(save.column, end.column):
            foot, gutter, top = route.turns[column]
            lane, following = lanes[column], lanes[column + 1]
            main += [(lane, foot), (gutter, foot), (gutter, top), (following, top)]
        main += [(lanes[end.column], arrivals[last][1]), arrivals[last]]
        paths: list[tuple[Point, ...]] = [tuple(main)]
        for index, (read, box) in enumerate(zip(skip.reads, readers, strict=True)):
            lane = lanes[box.column]
            if index != last:
                paths.append(((lane, arrivals[index][1]), arrivals[index]))
            if read.slot == 0:  # a read of several values is labelled once
                labels.append(self.line_label(box, read.label, read.transform_layers, read.slots))
            marks += self.marks(box, read.transform_layers, lane)
        return Edge(
            skip.id,
            "skip",
            skip.save,
            tuple(r.node for r in skip.reads),
            tuple(paths),
            route.level,
            tuple(labels),
            tuple(marks),
        )

    def line_label(self, box: Box, text: str, transform: tuple[str, ...], slots: int = 1) -> Label:
        """A skip's text just above its horizontal line (the first of a read's several),
        right of the node's glyph (above the transform's mark, if any); names too long are
        cut, keeping the op and the shape."""
        if transform:
            y = box.cy - label_raise(mark_lines(self.text, transform))
        else:
            y = box.cy - label_rise(slots)
        x = box.cx + MERGE_R + LABEL_INSET
        text = self.text.fit(text, "skip", name_length(text))
        return Label(x, y, text, "skip", SMALL_FONT, "left", "center")

    def marks(self, box: Box, transform: tuple[str, ...], lane: float) -> list[Mark]:
        """A transform as a box on the skip's horizontal line, towards its lane but left of
        lane 0, so that no other skip's lane runs through it: a line per layer of it, each
        with its parameter count."""
        if not transform:
            return []
        lines = mark_lines(self.text, transform)
        w, h = mark_width(lines), mark_height(lines)
        lane0 = box.cx + self.text.box_w / 2 + LANE_MARGIN
        x = max(box.cx + MERGE_R + MARK_CLEARANCE, min(lane, lane0) - MARK_CLEARANCE - w)
        return [Mark(x, box.cy - h / 2, w, h, lines)]


def arrival(box: Box, read: SkipRead) -> Point:
    """Where the value `read` brings meets the outline of its merge `box`, from the right."""
    offset = slot_offsets(read.slots)[read.slot]
    return (box.cx + math.sqrt(MERGE_R**2 - offset**2), box.cy + offset)


def name_length(label: str) -> int:
    """How much of a skip label is names (cut first when it is too long): up to the op."""
    head, sep, _ = label.partition(" · ")
    return len(head) if sep else len(label.split(" (")[0])


def label_raise(transform: tuple[str, ...]) -> float:
    """How far above its line a skip label sits when the line carries `transform`'s mark."""
    return mark_height(transform) / 2 + 0.085
