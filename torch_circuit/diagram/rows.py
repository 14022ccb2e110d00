"""The diagram laid out left to right: `layout_rows`, for `direction="right"`.

The same graph, the same cuts and packing (`columns.py`) and the same lane levels
(`lanes.py`) as the top-down layout, turned a quarter: nodes sit along a row on one axis, each
box as wide as its text; frames hold their label above the row; skips drop from their save to
a lane below the row, run along it, and rise into each read, with their label and transform
beside the drop. A long diagram wraps into rows; a skip live across the wrap runs right past
the row's end, down, back left past the next row's start, and down into a lane there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

from . import columns as columns_
from .describe import format_shape, text_width
from .geometry import (
    BOTTOM,
    BOX_FONT,
    BOX_PAD_X,
    BOX_PAD_Y,
    DOT_R,
    FRAME_HEADER,
    FRAME_PAD,
    GLYPH,
    LANE_GAP,
    LINE_H,
    MAX_BOX_W,
    MERGE_R,
    SHAPE_FONT,
    SMALL_FONT,
    TAP_R,
    Box,
    Edge,
    Frame,
    Label,
    Layout,
    Mark,
    Point,
    TextFit,
    frame_nesting,
    glyph_radius,
    mark_height,
    mark_lines,
    mark_width,
    slot_offsets,
)
from .graph import GLYPHS, Graph, GraphNode, GraphSkip, Item, SkipRead
from .lanes import lane_levels

__all__ = ["layout_rows"]

MIN_W = 0.7  # the narrowest layer box
GAP_X = 0.3  # along the row, between two nodes (more where a shape label needs it)
LABEL_BAND = 0.2  # below the row: skip labels, right of each drop
MARGIN = 0.12  # around the marks and lanes below the row
ROW_GAP = 0.3  # between one row's lowest lane and the next row's frames
LEFT = 0.12  # where the flow turns down into the next row
TURN = 0.2  # past a row's end, where the flow turns down


def layout_rows(graph: Graph, max_row_width: float | None = None) -> Layout:
    """Place `graph` left to right, wrapping into rows no wider than `max_row_width` inches
    (by default, as square as the content allows)."""
    return _RowPlacer(graph).place(max_row_width)


@dataclass
class _Row:
    items: list[Item] = field(default_factory=list)
    index: int = 0
    top: float = 0.0
    axis: float = 0.0
    end: float = 0.0
    bottom: float = 0.0
    lanes: dict[str, float] = field(default_factory=dict)  # skip id -> lane y
    levels: dict[str, int] = field(default_factory=dict)
    leaving: list[str] = field(default_factory=list)


class _RowPlacer:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.text = TextFit(MAX_BOX_W)

    # -- sizes --

    def lines(self, node: GraphNode) -> tuple[str, ...]:
        if node.kind in GLYPHS:
            return node.lines
        return tuple(self.text.fit(line, "box") for line in node.lines)

    def size(self, node: GraphNode) -> tuple[float, float]:
        if node.kind in GLYPHS:
            return GLYPH, GLYPH
        widest = max(text_width(line, BOX_FONT) for line in self.lines(node))
        return max(MIN_W, widest + 2 * BOX_PAD_X), len(node.lines) * LINE_H + 2 * BOX_PAD_Y

    def skip_text(self, node: GraphNode) -> tuple[str, tuple[str, ...]]:
        """The label beside a glyph's drop, and its transform's lines (a tap: no label, and
        the box naming its output)."""
        if node.kind == "tap":
            return "", tuple(self.text.fit(line, "mark") for line in node.lines)
        if node.kind == "save":
            skip = self.graph.skip_of(node.id)
            return skip.label, mark_lines(self.text, skip.transform_layers)
        read = self.graph.read_of(node.id)
        return read.label, mark_lines(self.text, read.transform_layers)

    def gap(self, node: GraphNode) -> float:
        """Room along the row before `node`: its edge, and the shape label above it."""
        if node.in_shape is None or node.kind == "input":
            return GAP_X
        return max(GAP_X, text_width(format_shape(node.in_shape), SHAPE_FONT) + 0.16)

    def length(self, chunk: list[Item]) -> float:
        """How far along a row a chunk reaches (an estimate for packing the rows)."""
        total = 0.0
        for kind, item_id in chunk:
            if kind == "node":
                node = self.graph.node(item_id)
                total += self.gap(node) + self.size(node)[0]
            else:
                total += GAP_X / 2 + FRAME_PAD
        return total

    # -- placing --

    def place(self, max_width: float | None) -> Layout:
        chunks, live = columns_.chunks(self.graph)
        lengths = [self.length(chunk) for chunk in chunks]
        row_height = 2.2  # a row's stride, with its frames and lanes: the packing's unit
        groups = columns_.pack(lengths, max_width, row_height, live)
        rows = [_Row(index=index) for index in range(max(groups, default=0) + 1)]
        for chunk, group in zip(chunks, groups, strict=True):
            rows[group].items.extend(chunk)
        spans, running = columns_.skips_by_column(self.graph, [row.items for row in rows])
        for skip_id, (first, last) in spans.items():
            for index in range(first, last):
                rows[index].leaving.append(skip_id)
        crossing = max((len(row.leaving) for row in rows), default=0)
        start = LEFT + (crossing + 1) * LANE_GAP + 0.12
        boxes: list[Box] = []
        frames: list[Frame] = []
        labels: list[Label] = []
        edge_labels: dict[str, list[Label]] = {}
        marks: dict[str, list[Mark]] = {}
        top = BOTTOM / 2
        for row in rows:
            row.top = top
            placed = self.place_row(row, start, spans, running[row.index], edge_labels, marks)
            boxes += placed[0]
            frames += placed[1]
            labels += placed[2]
            top = row.bottom + (len(row.leaving) + 1) * LANE_GAP + ROW_GAP
        by_id = {box.id: box for box in boxes}
        edges = self.skip_edges(by_id, rows, spans, edge_labels, marks)
        edges += self.flow_edges([box for box in boxes if box.kind != "entry"], rows)
        edges += [self.tap_edge(box, marks) for box in boxes if box.kind == "tap"]
        width = max(row.end + TURN + (len(row.leaving) + 1) * LANE_GAP for row in rows) + 0.2
        return Layout(
            width=width,
            height=rows[-1].bottom + BOTTOM,
            boxes=tuple(boxes),
            frames=tuple(frames),
            edges=tuple(edges),
            labels=tuple(labels),
            columns=len(rows),
            graph=self.graph,
            direction="right",
        )

    def place_row(
        self,
        row: _Row,
        start: float,
        spans: dict[str, tuple[int, int]],
        skips: list[GraphSkip],
        edge_labels: dict[str, list[Label]],
        marks: dict[str, list[Mark]],
    ) -> tuple[list[Box], list[Frame], list[Label]]:
        graph = self.graph
        frame_ids = [item_id for kind, item_id in row.items if kind == "open"]
        nesting = frame_nesting(graph, frame_ids)
        header = FRAME_HEADER * (1 + max(nesting.values())) + 0.08 if frame_ids else 0.0
        nodes = [graph.node(i) for kind, i in row.items if kind == "node"]
        band = max(self.size(node)[1] for node in nodes) if nodes else GLYPH
        row.axis = row.top + header + band / 2
        below = row.axis + band / 2  # the foot of the tallest box
        tallest_mark = 0.0
        x, clear = start, start  # `clear`: where the last glyph's label and mark end
        boxes: list[Box] = []
        x_spans: dict[str, tuple[float, float]] = {}
        for kind, item_id in row.items:
            if kind == "open":
                x += GAP_X / 2
                x_spans[item_id] = (x, x)
                x += FRAME_PAD
            elif kind == "close":
                x = max(x, clear) + FRAME_PAD  # the frame holds its last skip label
                x_spans[item_id] = (x_spans[item_id][0], x)
            else:
                node = graph.node(item_id)
                w, h = self.size(node)
                x += self.gap(node)
                if node.kind in GLYPHS:
                    text, lines = self.skip_text(node)
                    half_mark = mark_width(lines) / 2 if lines else 0.0
                    x = max(x, clear + 0.1 + half_mark - w / 2)
                    cx = x + w / 2
                    label_end = cx + self.label_inset(node) + text_width(text, SMALL_FONT)
                    clear = max(label_end, cx + half_mark)
                    tallest_mark = max(tallest_mark, mark_height(lines) if lines else 0.0)
                box = Box(
                    node.id,
                    node.kind,
                    x,
                    row.axis - h / 2,
                    w,
                    h,
                    self.lines(node),
                    node.family,
                    row.index,
                )
                boxes.append(box)
                x += w
        row.end = max(x, clear)
        lane0 = below + LABEL_BAND + (tallest_mark + MARGIN if tallest_mark else 0.0) + MARGIN
        by_id = {box.id: box for box in boxes}
        level = lane_levels(graph, self.lane_spans(row, by_id, spans, skips), x_spans)

        def lane_y(lane: int) -> float:
            return lane0 + lane * LANE_GAP

        frames = []
        for fid in frame_ids:
            info = graph.frame(fid)
            x0, x1 = x_spans[fid]
            y0 = row.axis - band / 2 - 0.08 - FRAME_HEADER * (1 + nesting[fid])
            frames.append(
                Frame(
                    fid,
                    info.label,
                    x0,
                    y0,
                    x1 - x0,
                    lane_y(level[fid]) - y0,
                    info.depth,
                    info.parent,
                    row.index,
                )
            )
        labels = [self.frame_label(frame) for frame in frames]
        for skip_id, lane in level.items():
            if skip_id in x_spans:
                continue
            row.levels[skip_id] = lane
            row.lanes[skip_id] = lane_y(lane)
        for box in boxes:
            if box.kind in GLYPHS:
                self.beside_drop(box, below, edge_labels, marks)
        row.bottom = max([lane0, *(lane_y(lane) for lane in level.values())]) + MARGIN
        return boxes, frames, labels

    def beside_drop(
        self,
        box: Box,
        below: float,
        edge_labels: dict[str, list[Label]],
        marks: dict[str, list[Mark]],
    ) -> None:
        """A glyph's skip label right of its drop below the row, its transform's mark on it."""
        node = self.graph.node(box.id)
        text, lines = self.skip_text(node)
        owner = f"tap:{box.id}" if node.kind == "tap" else self.graph.skip_of(box.id).id
        if text:
            x = box.cx + self.label_inset(node)
            label = Label(x, below + LABEL_BAND / 2, text, "skip", SMALL_FONT)
            edge_labels.setdefault(owner, []).append(label)
        if lines:
            w, h = mark_width(lines), mark_height(lines)
            y = below + LABEL_BAND + MARGIN / 2
            marks.setdefault(owner, []).append(Mark(box.cx - w / 2, y, w, h, lines))

    def label_inset(self, node: GraphNode) -> float:
        """From a glyph's centre to its label: right of its drop, or of the rightmost of the
        rises into a read of several values."""
        slots = self.graph.read_of(node.id).slots if node.kind == "merge" else 1
        return slot_offsets(slots)[-1] + 0.06

    def tap_edge(self, box: Box, marks: dict[str, list[Mark]]) -> Edge:
        """An output's tap: an arrow down from its glyph into the box naming the output."""
        edge_id = f"tap:{box.id}"
        drawn = tuple(marks.get(edge_id, ()))
        path = ((box.cx, box.cy + TAP_R), (box.cx, drawn[0].y))
        return Edge(edge_id, "tap", box.id, (), (path,), None, (), drawn)

    def lane_spans(
        self,
        row: _Row,
        boxes: dict[str, Box],
        spans: dict[str, tuple[int, int]],
        skips: list[GraphSkip],
    ) -> list[tuple[GraphSkip, tuple[float, float]]]:
        """Each skip with a reader that runs in this row (of `skips`), with the left and
        right ends of its lane there."""
        result = []
        for skip in skips:
            if skip.id not in spans:
                continue
            first, last = spans[skip.id]
            xs = [boxes[n].cx for n in (skip.save, *(r.node for r in skip.reads)) if n in boxes]
            if first < row.index:
                xs.append(0.0)  # crossing in from the left
            if row.index < last:
                xs.append(row.end + TURN)  # crossing out past the end
            result.append((skip, (min(xs), max(xs))))
        return result

    def frame_label(self, frame: Frame) -> Label:
        name = len(self.graph.frame(frame.id).block)
        room = TextFit(2 * (frame.w - 0.04))  # the frame's own width, not a column's
        text = room.fit(frame.label, "frame", name)
        return Label(frame.x + 0.07, frame.y + 0.05, text, "frame", SMALL_FONT, "left", "top")

    # -- edges --

    def skip_edges(
        self,
        boxes: dict[str, Box],
        rows: list[_Row],
        spans: dict[str, tuple[int, int]],
        edge_labels: dict[str, list[Label]],
        marks: dict[str, list[Mark]],
    ) -> list[Edge]:
        """Every skip's edge; one that wraps turns right of and below the flow's turn, the
        outer skips nearest to it, and comes down left of the next row's start."""
        turns: dict[str, dict[int, tuple[float, float, float]]] = {}
        for row in rows[:-1]:
            outermost_first = sorted(row.leaving, key=lambda s: -row.levels[s])
            for rank, skip_id in enumerate(outermost_first, start=1):
                right = row.end + TURN + rank * LANE_GAP
                down = row.bottom + rank * LANE_GAP
                left = LEFT + rank * LANE_GAP
                turns.setdefault(skip_id, {})[row.index] = (right, down, left)
        edges = []
        for skip in self.graph.skips:
            if skip.save not in boxes:
                continue
            save = boxes[skip.save]
            texts = tuple(edge_labels.get(skip.id, ()))
            drawn = tuple(marks.get(skip.id, ()))
            level = rows[save.column].levels.get(skip.id)
            if not skip.reads:
                edges.append(Edge(skip.id, "skip", skip.save, (), (), level, texts, drawn))
                continue
            readers = [boxes[r.node] for r in skip.reads]
            rises = [_rise(box, read) for read, box in zip(skip.reads, readers, strict=True)]
            end = max(range(len(readers)), key=lambda i: (readers[i].column, rises[i][0]))
            last = readers[end]
            lanes = {r: rows[r].lanes[skip.id] for r in range(save.column, last.column + 1)}
            drop = save.y + save.h if save.kind == "entry" else save.cy + DOT_R
            main: list[Point] = [(save.cx, drop), (save.cx, lanes[save.column])]
            for index in range(save.column, last.column):
                right, down, left = turns[skip.id][index]
                main += [
                    (right, lanes[index]),
                    (right, down),
                    (left, down),
                    (left, lanes[index + 1]),
                ]
            main += [(rises[end][0], lanes[last.column]), rises[end]]
            paths = [tuple(main)]
            paths += [
                ((rise[0], lanes[box.column]), rise)
                for index, (box, rise) in enumerate(zip(readers, rises, strict=True))
                if index != end
            ]
            targets = tuple(r.node for r in skip.reads)
            edges.append(
                Edge(skip.id, "skip", skip.save, targets, tuple(paths), level, texts, drawn)
            )
        return edges

    def flow_edges(self, boxes: list[Box], rows: list[_Row]) -> list[Edge]:
        edges: list[Edge] = []
        for previous, box in itertools.pairwise(boxes):
            leave = (_right(previous), previous.cy)
            arrive = (_left(box), box.cy)
            if previous.column == box.column:
                path: tuple[Point, ...] = (leave, arrive)
            else:
                row = rows[previous.column]
                turn, down = row.end + TURN, row.bottom
                path = (
                    leave,
                    (turn, previous.cy),
                    (turn, down),
                    (LEFT, down),
                    (LEFT, box.cy),
                    arrive,
                )
            shape = self.graph.node(box.id).in_shape
            texts: tuple[Label, ...] = ()
            if shape is not None:
                x = (path[-2][0] + arrive[0]) / 2 if len(path) == 2 else arrive[0] - 0.08
                ha: Literal["center", "right"] = "center" if len(path) == 2 else "right"
                text = format_shape(shape)
                label = Label(x, box.cy - 0.06, text, "shape", SHAPE_FONT, ha, "bottom")
                texts = (label,)
            edge_id = f"flow:{previous.id}->{box.id}"
            edges.append(Edge(edge_id, "flow", previous.id, (box.id,), (path,), None, texts, ()))
        return edges


def _rise(box: Box, read: SkipRead) -> Point:
    """Where the value `read` brings meets the outline of its merge `box`, from below."""
    offset = slot_offsets(read.slots)[read.slot]
    return (box.cx + offset, box.cy + math.sqrt(MERGE_R**2 - offset**2))


def _right(box: Box) -> float:
    radius = glyph_radius(box)
    return box.x + box.w if radius is None else box.cx + radius


def _left(box: Box) -> float:
    radius = glyph_radius(box)
    return box.x if radius is None else box.cx - radius
