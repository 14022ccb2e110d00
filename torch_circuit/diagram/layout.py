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

from ..scope import Scope
from ..shapes import ShapeTrace
from . import columns as columns_
from .describe import format_shape, text_width
from .geometry import (
    BOTTOM,
    BOX_FONT,
    BOX_PAD_X,
    BOX_PAD_Y,
    COLUMN_GUTTER,
    CROSS_STEP,
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
    MARK_H,
    MAX_BOX_W,
    MERGE_R,
    MIN_BOX_W,
    RIGHT_PAD,
    SHAPE_FONT,
    SMALL_FONT,
    TAP_ARROW,
    TAP_R,
    TOP,
    TRANSFORM_ROW,
    WRAP_Y,
    Box,
    Direction,
    Edge,
    Frame,
    Label,
    Layout,
    Mark,
    Point,
    TextFit,
    frame_nesting,
    label_rise,
    mark_height,
    mark_lines,
    mark_width,
    outline_bottom,
    outline_top,
    tap_room,
)
from .graph import GLYPHS, Graph, GraphNode, GraphSkip, InputShapes, Item, circuit_graph
from .lanes import SkipRoute, SkipRouter, label_raise, lane_levels
from .rows import layout_rows
from .view import Expand

__all__ = ["check_direction", "layout_circuit", "layout_graph", "tap_edge"]


def layout_circuit(
    circuit: Scope,
    *,
    show_repeats: bool | None = None,
    expanded: bool | None = None,
    input_shape: Sequence[int] | Tensor | None = None,
    max_column_height: float | None = None,
    view: Expand | None = None,
    trace: ShapeTrace | None = None,
    direction: Direction = "down",
    input_shapes: InputShapes | None = None,
) -> Layout:
    """Place every box, frame, lane and edge of `circuit`'s diagram.

    Args:
        circuit: a `Circuit`.
        show_repeats: `True` folds each block into one framed copy; `False` draws every
            repeat (the seed's spelling of `not expanded`).
        expanded: `True` draws every repeat of every block; `False` (the default) each block
            once.
        input_shape: an input shape (or example tensor) to label every edge with its shape.
        max_column_height: wrap into columns no taller than this (inches) where the flow
            allows (with `direction="right"`: rows no wider); by default chosen so that the
            diagram is about as wide as it is tall.
        view: which blocks to expand, by `StartBlock` position (see `view.Expand`).
        trace: shapes already traced, instead of `input_shape`.
        direction: `"down"` (columns, wrapping to the right) or `"right"` (rows, left to
            right, wrapping downwards; see `rows.py`).
        input_shapes: a shape or example tensor for each named input (with `input_shape`);
            each entry shows its input's shape.

    Examples:
        >>> layout = layout_circuit(model, expanded=True)
        >>> layout.width, layout.height  # inches, the figure's natural size
    """
    graph = circuit_graph(
        circuit,
        show_repeats,
        input_shape,
        expanded=expanded,
        view=view,
        trace=trace,
        input_shapes=input_shapes,
    )
    return layout_graph(graph, max_column_height=max_column_height, direction=direction)


def layout_graph(
    graph: Graph, *, max_column_height: float | None = None, direction: Direction = "down"
) -> Layout:
    """Place `graph` (see `layout_circuit`)."""
    check_direction(direction)
    if direction == "right":
        return layout_rows(graph, max_column_height)
    return _Placer(graph).place(max_column_height)


def check_direction(direction: object) -> None:
    """Refuse a `direction` other than `"down"` and `"right"`."""
    if direction not in ("down", "right"):
        raise ValueError(
            f"direction must be 'down' (columns, the default) or 'right' (rows, left to "
            f"right), got {direction!r}."
        )


@dataclass
class _Column:
    items: list[Item] = field(default_factory=list)
    index: int = 0
    x: float = 0.0
    width: float = 0.0
    bottom: float = 0.0
    lanes: dict[str, float] = field(default_factory=dict)  # skip id -> lane x
    levels: dict[str, int] = field(default_factory=dict)  # skip id -> lane level
    leaving: list[str] = field(default_factory=list)  # skips crossing into the next column

    @property
    def foot(self) -> float:
        """The lowest point anything of the column reaches: the flow and the skips that wrap
        into the next column run below its last row."""
        return self.bottom + GAP / 2 + LANE_GAP * len(self.leaving)


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
        for lines in [skip.transform_layers, *(r.transform_layers for r in skip.reads)]:
            if lines:  # past the widest box, a layer's parameter count takes a line of its own
                room = mark_width(lines) + 2 * MARK_CLEARANCE
                need = max(need, 2 * (MERGE_R + room - LANE_MARGIN))
    for frame in graph.frames:
        need = max(need, 2 * (text_width(frame.label, SMALL_FONT) + 0.1))
    # A tap's arrow and the box naming its output sit right of the tap, left of lane 0.
    for node in graph.nodes:
        if node.kind == "tap":
            room = mark_width(node.lines) + LABEL_CLEARANCE + TAP_R + TAP_ARROW
            need = max(need, 2 * (room - LANE_MARGIN))
    return min(MAX_BOX_W, need)


class _Placer:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.box_w = box_width(graph)
        self.text = TextFit(self.box_w)
        self.router = SkipRouter(self.text)
        self.top = BOTTOM / 2

    # -- sizes --

    def box_lines(self, node: GraphNode) -> tuple[str, ...]:
        if node.kind == "tap":
            return tuple(self.text.fit(line, "tap") for line in node.lines)
        if node.kind in GLYPHS:
            return node.lines
        return tuple(self.text.fit(line, "box") for line in node.lines)

    def node_height(self, node: GraphNode) -> float:
        if node.kind in GLYPHS:
            lines = mark_lines(self.text, self.transform_of(node))
            if not lines:
                # Room above the first value's line for the label of a read of several.
                slots = self.graph.read_of(node.id).slots if node.kind == "merge" else 1
                return max(GLYPH, 2 * (label_rise(slots) + 0.075))
            # The mark centred on the row's line, the skip label above it, as much below.
            return max(TRANSFORM_ROW, 2 * (label_raise(lines) + 0.07), mark_height(lines) + 0.1)
        return len(node.lines) * LINE_H + 2 * BOX_PAD_Y

    def node_width(self, node: GraphNode) -> float:
        return GLYPH if node.kind in GLYPHS else self.box_w

    def transform_of(self, node: GraphNode) -> tuple[str, ...]:
        if node.kind == "save":
            return self.graph.skip_of(node.id).transform_layers
        if node.kind == "merge":
            return self.graph.read_of(node.id).transform_layers
        return ()

    # -- columns --

    def columns(self, max_height: float | None) -> list[_Column]:
        chunks, live = columns_.chunks(self.graph)
        heights = [columns_.chunk_height(c, self.graph, self.node_height) for c in chunks]
        column_width = self.box_w + 1.4  # with frames, lanes and the gutter
        groups = columns_.pack(heights, max_height, column_width, live)
        columns = [_Column(index=index) for index in range(max(groups, default=0) + 1)]
        for chunk, group in zip(chunks, groups, strict=True):
            columns[group].items.extend(chunk)
        return columns

    # -- placing --

    def place(self, max_column_height: float | None) -> Layout:
        boxes: list[Box] = []
        frames: list[Frame] = []
        labels: list[Label] = []
        columns = self.columns(max_column_height)
        spans, running = columns_.skips_by_column(self.graph, [c.items for c in columns])
        for skip_id, (first, last) in spans.items():
            for index in range(first, last):
                columns[index].leaving.append(skip_id)
        crossing = max((len(column.leaving) for column in columns), default=0)
        if len(columns) > 1:  # room at the top for the edges wrapping in
            self.top = max(TOP, WRAP_Y + (crossing + 1) * CROSS_STEP + 0.1)
        x = 0.0
        for column in columns:
            column.x = x
            placed = self.place_column(column, spans, running[column.index])
            boxes += placed[0]
            frames += placed[1]
            labels += placed[2]
            x += column.width + COLUMN_GUTTER + LANE_GAP * len(column.leaving)
        by_id = {box.id: box for box in boxes}
        edges = self.skip_edges(by_id, columns, spans)
        edges += self.flow_edges([box for box in boxes if box.kind != "entry"], columns)
        edges += [tap_edge(box, self.box_w) for box in boxes if box.kind == "tap"]
        return Layout(
            width=x - COLUMN_GUTTER,
            height=max(column.foot for column in columns) + BOTTOM,
            boxes=tuple(boxes),
            frames=tuple(frames),
            edges=tuple(edges),
            labels=tuple(labels),
            columns=len(columns),
            graph=self.graph,
        )

    def place_column(
        self, column: _Column, skip_spans: dict[str, tuple[int, int]], skips: list[GraphSkip]
    ) -> tuple[list[Box], list[Frame], list[Label]]:
        graph = self.graph
        frame_ids = [item_id for kind, item_id in column.items if kind == "open"]
        max_depth = max((graph.frame(f).depth for f in frame_ids), default=0)
        left = column.x + FRAME_PAD * (max_depth + 1) if frame_ids else column.x + 0.15
        right = left + self.box_w
        boxes, spans = self.stack(column, left + self.box_w / 2)
        by_id = {box.id: box for box in boxes}
        lanes = self.lane_spans(column, by_id, skip_spans, skips)
        level = lane_levels(graph, lanes, spans)

        def lane_x(lane: int) -> float:
            return right + LANE_MARGIN + lane * LANE_GAP

        nesting = frame_nesting(self.graph, frame_ids)
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
        for skip, _ in lanes:
            column.levels[skip.id] = level[skip.id]
            column.lanes[skip.id] = lane_x(level[skip.id])
        widest = max([right, *(lane_x(lane) for lane in level.values())])
        column.width = widest + RIGHT_PAD - column.x
        return boxes, frames, labels

    def lane_spans(
        self,
        column: _Column,
        boxes: dict[str, Box],
        skip_spans: dict[str, tuple[int, int]],
        skips: list[GraphSkip],
    ) -> list[tuple[GraphSkip, tuple[float, float]]]:
        """Each skip that runs in this column (`skips`), with the top and bottom of its lane
        there."""
        result = []
        for skip in skips:
            first, last = skip_spans.get(skip.id, (column.index, column.index))
            nodes = [skip.save, *(r.node for r in skip.reads)]
            ys = [boxes[n].cy for n in nodes if n in boxes]
            if first < column.index:
                ys.append(0.0)  # crossing in at the top
            if column.index < last:
                ys.append(column.bottom + GAP)  # crossing out at the foot
            result.append((skip, (min(ys), max(ys))))
        return result

    def skip_edges(
        self,
        boxes: dict[str, Box],
        columns: list[_Column],
        spans: dict[str, tuple[int, int]],
    ) -> list[Edge]:
        """Every skip's edge; one that wraps crosses each gutter below and right of the flow,
        the outer skips (higher lane levels) nearest to it, so that wrapped skips nest."""
        turns: dict[str, dict[int, tuple[float, float, float]]] = {}
        for column in columns[:-1]:
            flow_gutter = column.x + column.width + COLUMN_GUTTER / 2
            outermost_first = sorted(column.leaving, key=lambda s: -column.levels[s])
            for rank, skip_id in enumerate(outermost_first, start=1):
                foot = column.bottom + GAP / 2 + rank * LANE_GAP
                gutter = flow_gutter + rank * LANE_GAP
                top = WRAP_Y + rank * CROSS_STEP
                turns.setdefault(skip_id, {})[column.index] = (foot, gutter, top)
        edges = []
        for skip in self.graph.skips:
            if skip.save not in boxes:
                continue
            first, last = spans.get(skip.id, (boxes[skip.save].column,) * 2)
            lanes = {c: columns[c].lanes[skip.id] for c in range(first, last + 1)}
            route = SkipRoute(lanes, turns.get(skip.id, {}), columns[first].levels[skip.id])
            edges.append(self.router.edge(skip, boxes, route))
        return edges

    def stack(self, column: _Column, cx: float) -> tuple[list[Box], dict[str, tuple[float, float]]]:
        """Place the column's nodes top to bottom; also return each frame's top and bottom."""
        y = self.top
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


def tap_edge(box: Box, box_w: float) -> Edge:
    """An output's tap: an arrow from its glyph on the flow to the right, into a box naming
    the output, which ends before lane 0."""
    w = min(mark_width(box.lines), tap_room(box_w))
    start = (box.cx + TAP_R, box.cy)
    x = start[0] + TAP_ARROW
    mark = Mark(x, box.cy - MARK_H / 2, w, MARK_H, box.lines)
    return Edge(f"tap:{box.id}", "tap", box.id, (), ((start, (x, box.cy)),), None, (), (mark,))
