"""Where skip edges run: a lane per skip right of the boxes, and the path from save to reads.

Within a column, skips and frame borders share one set of levels counted outwards from the
boxes; a skip live where the diagram wraps runs down its lane to the foot of the column,
across the gutter, and on down a lane of the next column. Deeper scopes come first, so a
skip inside a frame runs inside its border and a skip passing or entering a frame runs
outside it; each takes the level just outside every earlier one it overlaps vertically, so
skips with overlapping spans never share a lane.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .geometry import (
    DOT_R,
    LABEL_INSET,
    MARK_CLEARANCE,
    MERGE_R,
    SMALL_FONT,
    Box,
    Edge,
    Label,
    Mark,
    Point,
    TextFit,
    mark_height,
    mark_lines,
    mark_width,
)
from .graph import Graph, GraphSkip

__all__ = ["SkipRoute", "SkipRouter", "label_raise", "lane_levels"]


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
    level: dict[str, int] = {}
    for index, (_, obj_id, span) in enumerate(objects):
        below = [level[o[1]] for o in objects[:index] if _overlaps(o[2], span)]
        level[obj_id] = 1 + max(below) if below else 0
    return level


def _scope_depth(graph: Graph, skip: GraphSkip) -> int:
    """How many frames hold the save and all the readers of `skip`."""
    paths = [graph.node(skip.save).frames, *(graph.node(r.node).frames for r in skip.reads)]
    depth = 0
    while all(len(p) > depth for p in paths) and len({p[depth] for p in paths}) == 1:
        depth += 1
    return depth


def _overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


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
        """The edge of `skip` along `route`."""
        save = boxes[skip.save]
        name = len(skip.name)
        lanes = route.lanes
        labels = [self.line_label(save, skip.label, skip.transform_layers, name)]
        marks = self.marks(save, skip.transform_layers, lanes[save.column])
        if not skip.reads:
            edge = Edge(skip.id, "skip", skip.save, (), (), route.level, (), ())
            return dataclasses.replace(edge, labels=tuple(labels), marks=tuple(marks))
        start = (save.cx + DOT_R, save.cy)
        readers = [boxes[r.node] for r in skip.reads]
        last = max(readers, key=lambda box: (box.column, box.cy))
        main: list[Point] = [start, (lanes[save.column], save.cy)]
        for column in range(save.column, last.column):
            foot, gutter, top = route.turns[column]
            lane, following = lanes[column], lanes[column + 1]
            main += [(lane, foot), (gutter, foot), (gutter, top), (following, top)]
        main += [(lanes[last.column], last.cy), (last.cx + MERGE_R, last.cy)]
        paths: list[tuple[Point, ...]] = [tuple(main)]
        for read, box in zip(skip.reads, readers, strict=True):
            lane = lanes[box.column]
            if box is not last:
                paths.append(((lane, box.cy), (box.cx + MERGE_R, box.cy)))
            labels.append(self.line_label(box, read.label, read.transform_layers, name))
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

    def line_label(self, box: Box, text: str, transform: tuple[str, ...], name: int) -> Label:
        """A skip's text just above its horizontal line, right of the node's glyph (above the
        transform's mark, if any); a name too long is cut, keeping the op and the shape."""
        y = box.cy - (label_raise(mark_lines(self.text, transform)) if transform else 0.075)
        x = box.cx + MERGE_R + LABEL_INSET
        return Label(x, y, self.text.fit(text, "skip", name), "skip", SMALL_FONT, "left", "center")

    def marks(self, box: Box, transform: tuple[str, ...], lane: float) -> list[Mark]:
        """A transform as a box on the skip's horizontal line, next to the lane: a line per
        layer of it, each with its parameter count."""
        if not transform:
            return []
        lines = mark_lines(self.text, transform)
        w, h = mark_width(lines), mark_height(lines)
        x = max(box.cx + MERGE_R + MARK_CLEARANCE, lane - MARK_CLEARANCE - w)
        return [Mark(x, box.cy - h / 2, w, h, lines)]


def label_raise(transform: tuple[str, ...]) -> float:
    """How far above its line a skip label sits when the line carries `transform`'s mark."""
    return mark_height(transform) / 2 + 0.085
