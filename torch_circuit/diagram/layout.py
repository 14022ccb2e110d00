"""Where everything of a diagram goes: `layout_circuit`.

The layout is a pure function of the circuit: the graph (`graph.py`) says what is drawn, the
columns (`columns.py`) where the diagram wraps, the lanes (`lanes.py`) where skips run, and
this module stacks the boxes and joins them. No drawing library is imported, so the layout is
tested as data (boxes never overlap, frames contain their boxes, overlapping skips get their
own lanes) and every renderer only draws it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from ..block import Scope
from . import columns as columns_
from .describe import format_shape, text_width
from .geometry import (
    BOTTOM,
    BOX_FONT,
    BOX_PAD_X,
    BOX_PAD_Y,
    COLUMN_GUTTER,
    FRAME_FOOTER,
    FRAME_HEADER,
    FRAME_PAD,
    GAP,
    GLYPH,
    LABEL_CLEARANCE,
    LABEL_INSET,
    LANE_GAP,
    LANE_MARGIN,
    LINE_H,
    MARK_CLEARANCE,
    MAX_BOX_W,
    MERGE_R,
    MIN_BOX_W,
    RIGHT_PAD,
    SHAPE_FONT,
    SMALL_FONT,
    TOP,
    TRANSFORM_ROW,
    WRAP_Y,
    Box,
    Edge,
    Frame,
    Label,
    Layout,
    Point,
    TextFit,
    mark_width,
    outline_bottom,
    outline_top,
)
from .graph import GLYPHS, Graph, GraphNode, Item, circuit_graph
from .lanes import SkipRouter, lane_levels

__all__ = ["layout_circuit", "layout_graph"]


def layout_circuit(
    circuit: Scope,
    *,
    show_repeats: bool = True,
    input_shape: Sequence[int] | Tensor | None = None,
    max_column_height: float | None = None,
) -> Layout:
    """Place every box, frame, lane and edge of `circuit`'s diagram.

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` folds each block into one framed copy; `False` draws every
            repeat.
        input_shape: an input shape (or example tensor) to label every edge with its shape.
        max_column_height: wrap into columns no taller than this (inches) where the flow
            allows; by default chosen so that the diagram is about as wide as it is tall.

    Examples:
        >>> layout = layout_circuit(model, show_repeats=False)
        >>> layout.width, layout.height  # inches, the figure's natural size
    """
    graph = circuit_graph(circuit, show_repeats, input_shape)
    return layout_graph(graph, max_column_height=max_column_height)


def layout_graph(graph: Graph, *, max_column_height: float | None = None) -> Layout:
    """Place `graph` (see `layout_circuit`)."""
    return _Placer(graph).place(max_column_height)


@dataclass
class _Column:
    items: list[Item] = field(default_factory=list)
    index: int = 0
    x: float = 0.0
    width: float = 0.0
    bottom: float = 0.0


def box_width(graph: Graph) -> float:
    """One width for every layer box: the widest text, and room for skip labels."""
    need = MIN_BOX_W
    for node in graph.nodes:
        if node.kind not in GLYPHS:
            widest = max(text_width(line, BOX_FONT) for line in node.lines)
            need = max(need, widest + 2 * BOX_PAD_X)
    # Skip labels and transform marks sit right of a glyph and left of lane 0.
    for skip in graph.skips:
        for text in [skip.label, *(r.label for r in skip.reads)]:
            room = text_width(text, SMALL_FONT) + LABEL_INSET + LABEL_CLEARANCE
            need = max(need, 2 * (MERGE_R + room - LANE_MARGIN))
        for transform in [skip.transform, *(r.transform for r in skip.reads)]:
            if transform:
                room = mark_width(transform) + 2 * MARK_CLEARANCE
                need = max(need, 2 * (MERGE_R + room - LANE_MARGIN))
    for frame in graph.frames:
        need = max(need, 2 * (text_width(frame.label, SMALL_FONT) + 0.1))
    return min(MAX_BOX_W, need)


class _Placer:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.box_w = box_width(graph)
        self.text = TextFit(self.box_w)
        self.router = SkipRouter(self.text)
        self.wrapped = False

    # -- sizes --

    def box_lines(self, node: GraphNode) -> tuple[str, ...]:
        if node.kind in GLYPHS:
            return node.lines
        return tuple(self.text.fit(line, "box") for line in node.lines)

    def node_height(self, node: GraphNode) -> float:
        if node.kind in GLYPHS:
            return TRANSFORM_ROW if self.transform_of(node) else GLYPH
        return len(node.lines) * LINE_H + 2 * BOX_PAD_Y

    def node_width(self, node: GraphNode) -> float:
        return GLYPH if node.kind in GLYPHS else self.box_w

    def transform_of(self, node: GraphNode) -> str | None:
        if node.kind == "save":
            return self.graph.skip_of(node.id).transform
        if node.kind == "merge":
            return self.graph.read_of(node.id).transform
        return None

    # -- columns --

    def columns(self, max_height: float | None) -> list[_Column]:
        chunks = columns_.chunks(self.graph)
        heights = [columns_.chunk_height(c, self.graph, self.node_height) for c in chunks]
        column_width = self.box_w + 1.4  # with frames, lanes and the gutter
        groups = columns_.pack(heights, max_height, column_width)
        columns = [_Column(index=index) for index in range(max(groups, default=0) + 1)]
        for chunk, group in zip(chunks, groups, strict=True):
            columns[group].items.extend(chunk)
        return columns

    # -- placing --

    def place(self, max_column_height: float | None) -> Layout:
        boxes: list[Box] = []
        frames: list[Frame] = []
        edges: list[Edge] = []
        labels: list[Label] = []
        columns = self.columns(max_column_height)
        self.wrapped = len(columns) > 1
        x = 0.0
        for column in columns:
            column.x = x
            placed = self.place_column(column)
            boxes += placed[0]
            frames += placed[1]
            edges += placed[2]
            labels += placed[3]
            x += column.width + COLUMN_GUTTER
        edges += self.flow_edges(boxes, columns)
        width = x - COLUMN_GUTTER
        height = max(column.bottom for column in columns) + BOTTOM
        return Layout(
            width=width,
            height=height,
            boxes=tuple(boxes),
            frames=tuple(frames),
            edges=tuple(edges),
            labels=tuple(labels),
            columns=len(columns),
            graph=self.graph,
        )

    def place_column(
        self, column: _Column
    ) -> tuple[list[Box], list[Frame], list[Edge], list[Label]]:
        graph = self.graph
        frame_ids = [item_id for kind, item_id in column.items if kind == "open"]
        max_depth = max((graph.frame(f).depth for f in frame_ids), default=0)
        left = column.x + FRAME_PAD * (max_depth + 1) if frame_ids else column.x + 0.15
        right = left + self.box_w
        boxes, spans = self.stack(column, left + self.box_w / 2)
        by_id = {box.id: box for box in boxes}
        skips = [s for s in graph.skips if s.save in by_id]
        level = lane_levels(graph, skips, by_id, spans)

        def lane_x(lane: int) -> float:
            return right + LANE_MARGIN + lane * LANE_GAP

        nesting = self.nesting(frame_ids)
        frames = []
        for fid in frame_ids:
            info = graph.frame(fid)
            x = left - FRAME_PAD * (1 + nesting[fid])
            top, bottom = spans[fid]
            width = lane_x(level[fid]) - x
            frames.append(
                Frame(
                    fid,
                    info.label,
                    x,
                    top,
                    width,
                    bottom - top,
                    info.depth,
                    info.parent,
                    column.index,
                )
            )
        labels = [self.frame_label(frame) for frame in frames]
        edges = [self.router.edge(s, by_id, lane_x(level[s.id]), level[s.id]) for s in skips]
        widest = max([right, *(lane_x(lane) for lane in level.values())])
        column.width = widest + RIGHT_PAD - column.x
        return boxes, frames, edges, labels

    def stack(self, column: _Column, cx: float) -> tuple[list[Box], dict[str, tuple[float, float]]]:
        """Place the column's nodes top to bottom; also return each frame's top and bottom."""
        y = TOP if self.wrapped else BOTTOM / 2  # room at the top for edges wrapping in
        boxes: list[Box] = []
        spans: dict[str, tuple[float, float]] = {}
        for kind, item_id in column.items:
            if kind == "node":
                node = self.graph.node(item_id)
                y += GAP
                w, h = self.node_width(node), self.node_height(node)
                lines = self.box_lines(node)
                boxes.append(
                    Box(node.id, node.kind, cx - w / 2, y, w, h, lines, node.family, column.index)
                )
                y += h
            elif kind == "open":
                y += GAP / 2
                spans[item_id] = (y, y)
                y += FRAME_HEADER
            else:
                y += FRAME_FOOTER
                spans[item_id] = (spans[item_id][0], y)
        column.bottom = y
        return boxes, spans

    def nesting(self, frame_ids: list[str]) -> dict[str, int]:
        """How many levels of frames each frame holds inside it (0 for the innermost)."""
        nesting = dict.fromkeys(frame_ids, 0)
        for fid in frame_ids:
            parent, height = self.graph.frame(fid).parent, 1
            while parent is not None and parent in nesting:
                nesting[parent] = max(nesting[parent], height)
                parent, height = self.graph.frame(parent).parent, height + 1
        return nesting

    def frame_label(self, frame: Frame) -> Label:
        name = len(self.graph.frame(frame.id).block)
        text = self.text.fit(frame.label, "frame", name)
        return Label(frame.x + 0.07, frame.y + 0.05, text, "frame", SMALL_FONT, "left", "top")

    def flow_edges(self, boxes: list[Box], columns: list[_Column]) -> list[Edge]:
        edges: list[Edge] = []
        for previous, box in itertools.pairwise(boxes):
            leave = (previous.cx, outline_bottom(previous))
            arrive = (box.cx, outline_top(box))
            if previous.column == box.column:
                path: tuple[Point, ...] = (leave, arrive)
            else:
                gutter = columns[previous.column].x + columns[previous.column].width
                gutter += COLUMN_GUTTER / 2
                below = columns[previous.column].bottom + GAP / 2  # under any frame
                path = (
                    leave,
                    (previous.cx, below),
                    (gutter, below),
                    (gutter, WRAP_Y),
                    (box.cx, WRAP_Y),
                    arrive,
                )
            shape = self.graph.node(box.id).in_shape
            edge_labels: tuple[Label, ...] = ()
            if shape is not None:
                text = format_shape(shape)
                x, y = box.cx + 0.07, box.y - GAP / 2
                edge_labels = (Label(x, y, text, "shape", SHAPE_FONT, "left", "center"),)
            edge_id = f"flow:{previous.id}->{box.id}"
            edges.append(
                Edge(edge_id, "flow", previous.id, (box.id,), (path,), None, edge_labels, ())
            )
        return edges
