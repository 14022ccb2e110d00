"""Where skip edges run: a lane per skip right of the boxes, and the path from save to reads.

Within a column, skips and frame borders share one set of levels counted outwards from the
boxes. Deeper scopes come first, so a skip inside a frame runs inside its border and a skip
passing or entering a frame runs outside it; each takes the level just outside every earlier
one it overlaps vertically, so skips with overlapping spans never share a lane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .geometry import (
    DOT_R,
    LABEL_INSET,
    MARK_CLEARANCE,
    MARK_H,
    MERGE_R,
    SMALL_FONT,
    Box,
    Edge,
    Label,
    Mark,
    Point,
    TextFit,
    mark_width,
)
from .graph import Graph, GraphSkip

__all__ = ["SkipRouter", "lane_levels"]


def lane_levels(
    graph: Graph,
    skips: Sequence[GraphSkip],
    boxes: Mapping[str, Box],
    frame_spans: Mapping[str, tuple[float, float]],
) -> dict[str, int]:
    """The level of every skip (by skip id) and every frame's right border (by frame id).

    Args:
        graph: the graph the skips and frames belong to.
        skips: the skips whose save is in this column.
        boxes: the column's boxes by node id.
        frame_spans: the top and bottom of each of the column's frames.
    """
    objects: list[tuple[tuple[float, float, float], str, tuple[float, float]]] = []
    for skip in skips:
        ys = [boxes[skip.save].cy, *(boxes[r.node].cy for r in skip.reads)]
        span = (min(ys), max(ys))
        key = (-2.0 * _scope_depth(graph, skip), span[1] - span[0], span[0])
        objects.append((key, skip.id, span))
    for frame_id, span in frame_spans.items():
        key = (-2.0 * graph.frame(frame_id).depth + 1, span[1] - span[0], span[0])
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
class SkipRouter:
    """Draws a skip as an edge: out of its save, down its lane, into each read."""

    text: TextFit

    def edge(self, skip: GraphSkip, boxes: Mapping[str, Box], lane: float, level: int) -> Edge:
        """The edge of `skip` running in the lane at `x = lane` (level `level`)."""
        save = boxes[skip.save]
        name = len(skip.name)
        labels = [self.line_label(save, skip.label, skip.transform is not None, name)]
        marks = self.marks(save, skip.transform, lane)
        if not skip.reads:
            return Edge(skip.id, "skip", skip.save, (), (), level, tuple(labels), tuple(marks))
        start = (save.cx + DOT_R, save.cy)
        readers = [boxes[r.node] for r in skip.reads]
        last = max(readers, key=lambda box: box.cy)
        paths: list[tuple[Point, ...]] = [
            (start, (lane, save.cy), (lane, last.cy), (last.cx + MERGE_R, last.cy))
        ]
        for read, box in zip(skip.reads, readers, strict=True):
            if box is not last:
                paths.append(((lane, box.cy), (box.cx + MERGE_R, box.cy)))
            labels.append(self.line_label(box, read.label, read.transform is not None, name))
            marks += self.marks(box, read.transform, lane)
        return Edge(
            skip.id,
            "skip",
            skip.save,
            tuple(r.node for r in skip.reads),
            tuple(paths),
            level,
            tuple(labels),
            tuple(marks),
        )

    def line_label(self, box: Box, text: str, raised: bool, name: int) -> Label:
        """A skip's text just above its horizontal line, right of the node's glyph; a name
        too long is cut, keeping what follows it (the op, the shape)."""
        y = box.cy - (0.17 if raised else 0.075)
        x = box.cx + MERGE_R + LABEL_INSET
        return Label(x, y, self.text.fit(text, "skip", name), "skip", SMALL_FONT, "left", "center")

    def marks(self, box: Box, transform: str | None, lane: float) -> list[Mark]:
        """A transform as a box on the skip's horizontal line, next to the lane."""
        if transform is None:
            return []
        transform = self.text.fit(transform, "mark")
        w = mark_width(transform)
        x = max(box.cx + MERGE_R + MARK_CLEARANCE, lane - MARK_CLEARANCE - w)
        return [Mark(x, box.cy - MARK_H / 2, w, MARK_H, transform)]
